// The "MLOps" left-sidebar panel: this notebook's DAG and Run button, the runs, models and approvals,
// deployments and drift. It polls the REST API: every 2 s while a run is in progress, slower otherwise, and
// at once after an action.
import { NotebookPanel, INotebookTracker } from '@jupyterlab/notebook';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { applyBadges } from './badges';
import { counts, duration, h, metrics, statusPill, when } from './dom';
import { apiPath, apiUrl, oneLine, postAPI, requestAPI } from './request';
import {
  ACTIVE,
  Dag,
  Deployment,
  Models,
  Monitoring,
  RunDetail,
  RunRecord
} from './types';

const FAST_MS = 2000;
const SLOW_MS = 10000;
const HIDDEN_MS = 15000;

/** A titled part of the panel with its own one-line error. */
class Section {
  readonly node: HTMLElement;
  readonly body: HTMLElement;
  readonly error: HTMLElement;
  private last = '';

  constructor(id: string, title: string, extra?: HTMLElement) {
    // until its first answer (the registry's first read imports MLflow: seconds)
    this.body = h('div', { class: 'mlops-section-body' }, h('div', { class: 'mlops-muted mlops-loading' }, 'loading…'));
    this.error = h('div', { class: 'mlops-error', hidden: true });
    this.node = h(
      'section',
      { class: 'mlops-section', id },
      h('h3', { class: 'mlops-section-title' }, title, extra ?? null),
      this.error,
      this.body
    );
  }

  /** Replace the body when ``key`` (the data it shows) changed. */
  show(key: string, render: () => Node[]): void {
    this.fail(null);
    if (key === this.last) {
      return;
    }
    this.last = key;
    this.body.replaceChildren(...render());
  }

  fail(error: unknown): void {
    if (error === null) {
      this.error.hidden = true;
      this.error.textContent = '';
    } else {
      this.error.hidden = false;
      this.error.textContent = oneLine(error);
      this.error.title = oneLine(error);
    }
  }

  /** Forget what is shown, so the next ``show`` renders. */
  invalidate(): void {
    this.last = '';
  }
}

export class MlopsPanel extends Widget {
  private readonly tracker: INotebookTracker | null;
  private readonly pipeline: Section;
  private readonly runs: Section;
  private readonly models: Section;
  private readonly deployments: Section;
  private readonly runButton: HTMLButtonElement;
  private readonly progress: HTMLElement;
  private readonly notice: HTMLElement;
  private timer: number | undefined;
  private ticking = false;
  private slowLoading = false;
  private again = false;
  private full = true;
  private dag: Dag | null = null;
  private runList: RunRecord[] = [];
  private activeRun: string | null = null;
  private activeDetail: RunDetail | null = null;
  private readonly expanded = new Map<string, RunDetail | null>();
  private readonly notes = new Map<string, string>();
  private lastSlow = 0;
  private aliases: Map<string, number> | null = null;

  constructor(tracker: INotebookTracker | null) {
    super();
    this.tracker = tracker;
    this.id = 'mlops-sidebar';
    this.addClass('mlops-sidebar');
    this.title.caption = 'MLOps';

    this.runButton = h(
      'button',
      { class: 'mlops-button mlops-run-button', type: 'button', onclick: () => void this.startRun() },
      'Run pipeline'
    ) as HTMLButtonElement;
    this.progress = h('div', { class: 'mlops-progress', hidden: true });
    this.notice = h('div', { class: 'mlops-notice', role: 'status', hidden: true });
    const refresh = h(
      'button',
      {
        class: 'mlops-icon-button mlops-refresh',
        type: 'button',
        title: 'Refresh now',
        onclick: () => this.poke(true)
      },
      '⟳'
    );

    this.pipeline = new Section('mlops-pipeline', 'This notebook');
    this.runs = new Section('mlops-runs', 'Runs');
    this.models = new Section('mlops-models', 'Models & approvals');
    this.deployments = new Section('mlops-deployments', 'Deployments & drift');
    this.pipeline.node.insertBefore(
      h('div', { class: 'mlops-run-bar' }, this.runButton, this.progress),
      this.pipeline.body
    );

    this.models.node.insertBefore(this.notice, this.models.body);
    this.node.append(
      h('header', { class: 'mlops-header' }, h('h2', {}, 'MLOps'), refresh),
      this.pipeline.node,
      this.runs.node,
      this.models.node,
      this.deployments.node
    );

    tracker?.currentChanged.connect(() => this.notebookChanged());
    tracker?.widgetAdded.connect((_, panel) => this.watchNotebook(panel));
    this.notebookChanged();
    this.schedule(0);
  }

  dispose(): void {
    window.clearTimeout(this.timer);
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    this.poke(true);
  }

  // polling ------------------------------------------------------------------------------------------------
  /** Refresh now (everything when ``full``). */
  poke(full = false): void {
    this.full = this.full || full;
    this.schedule(0);
  }

  private schedule(ms: number): void {
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.tick(), ms);
  }

  private busy(): boolean {
    return this.activeRun !== null || this.runList.some(r => ACTIVE.has(r.status));
  }

  private async tick(): Promise<void> {
    if (this.ticking) {
      this.again = true;
      return;
    }
    this.ticking = true;
    try {
      const visible = this.isVisible;
      const wasBusy = this.busy();
      const slow = this.full || Date.now() - this.lastSlow >= SLOW_MS;
      const jobs: Promise<void>[] = [this.loadDag()];
      if (visible || this.activeRun) {
        jobs.push(this.loadRuns(), this.loadActive());
      }
      if (visible && slow && !this.slowLoading) {
        // models, deployments and drift: slower reads (MLflow), not waited for, so progress polls stay on time
        this.full = false;
        this.lastSlow = Date.now();
        this.slowLoading = true;
        void this.loadModels()
          .then(names => this.loadDeployments(names))
          .finally(() => {
            this.slowLoading = false;
            if (this.full) {
              this.schedule(0);
            }
          });
      }
      await Promise.all(jobs);
      if (wasBusy && !this.busy()) {
        // a run just ended: the runs, badges and models change with it
        this.full = true;
        this.again = true;
      }
    } finally {
      this.ticking = false;
    }
    if (this.again) {
      this.again = false;
      this.schedule(0);
    } else {
      this.schedule(this.busy() ? FAST_MS : this.isVisible ? SLOW_MS : HIDDEN_MS);
    }
  }

  // the active notebook -------------------------------------------------------------------------------------
  private current(): NotebookPanel | null {
    return this.tracker?.currentWidget ?? null;
  }

  private watchNotebook(panel: NotebookPanel): void {
    panel.context.saveState.connect((_, state) => {
      if (state === 'completed' && panel === this.current()) {
        this.poke();
      }
    });
    panel.content.model?.cells.changed.connect(() => {
      if (panel === this.current()) {
        applyBadges(panel, this.dag);
      }
    });
  }

  private notebookChanged(): void {
    this.dag = null;
    this.pipeline.invalidate();
    this.poke();
  }

  private async loadDag(): Promise<void> {
    const panel = this.current();
    if (!panel) {
      this.dag = null;
      this.renderPipeline(null);
      return;
    }
    await panel.context.ready;
    const path = panel.context.path;
    try {
      const dag = await requestAPI<Dag>(apiPath('pipelines', path, 'dag'));
      if (panel !== this.current()) {
        return;
      }
      this.dag = dag;
      this.renderPipeline(path);
    } catch (error) {
      if (panel !== this.current()) {
        return;
      }
      this.dag = null;
      this.renderPipeline(path);
      this.pipeline.fail(error);
    }
    applyBadges(panel, this.dag);
  }

  private renderPipeline(path: string | null): void {
    this.runButton.disabled = !path || !this.dag || this.activeRun !== null;
    const key = JSON.stringify([path, this.dag]);
    this.pipeline.show(key, () => {
      if (!path) {
        return [h('div', { class: 'mlops-empty' }, 'Open a notebook to see its pipeline.')];
      }
      const title = h(
        'div',
        { class: 'mlops-dag-title', title: path },
        h('span', { class: 'mlops-dag-name' }, this.dag?.name ?? path.split('/').pop() ?? path),
        h('span', { class: 'mlops-muted' }, ` ${path}`)
      );
      if (!this.dag) {
        return [title];
      }
      const list = h('ol', { class: 'mlops-dag', 'data-pipeline': this.dag.name });
      for (const step of this.dag.steps) {
        const upstream = step.upstream.length ? `← ${step.upstream.join(', ')}` : 'start';
        list.appendChild(
          h(
            'li',
            { class: `mlops-dag-step mlops-dag-${step.status}`, 'data-step': step.name, 'data-status': step.status },
            h(
              'div',
              { class: 'mlops-dag-line' },
              h('span', { class: 'mlops-dag-step-name' }, step.name),
              statusPill(step.status),
              h('span', { class: 'mlops-muted mlops-right' }, duration(step.duration))
            ),
            h('div', { class: 'mlops-dag-upstream mlops-muted' }, upstream),
            step.why ? h('div', { class: 'mlops-why', title: step.why }, step.why) : null,
            step.error ? h('div', { class: 'mlops-why mlops-why-error', title: step.error }, step.error) : null
          )
        );
      }
      if (!this.dag.steps.length) {
        list.appendChild(h('li', { class: 'mlops-empty' }, 'No step cells: mark a cell with %%mlops step NAME.'));
      }
      return [title, list];
    });
  }

  // runs -----------------------------------------------------------------------------------------------------
  private async startRun(): Promise<void> {
    const panel = this.current();
    if (!panel || this.activeRun) {
      return;
    }
    this.runButton.disabled = true;
    this.pipeline.fail(null);
    try {
      if (panel.context.model.dirty) {
        await panel.context.save();
      }
      const started = await postAPI<{ id: string; status: string }>('runs', {
        path: panel.context.path,
        params: {},
        executor: null,
        no_cache: false
      });
      this.activeRun = started.id;
      this.activeDetail = { id: started.id, status: started.status } as RunDetail;
      this.renderProgress();
    } catch (error) {
      this.pipeline.fail(error);
      this.runButton.disabled = false;
    }
    this.poke();
  }

  private async loadActive(): Promise<void> {
    const id = this.activeRun;
    if (!id) {
      return;
    }
    try {
      const detail = await requestAPI<RunDetail>(apiPath('runs', id));
      this.activeDetail = detail;
      if (!ACTIVE.has(detail.status)) {
        this.activeRun = null;
        this.expanded.clear(); // the run just ended is the one to read
        this.expanded.set(id, detail);
        this.runs.invalidate();
      }
    } catch (error) {
      this.pipeline.fail(error);
    }
    this.renderProgress();
  }

  private renderProgress(): void {
    const detail = this.activeDetail;
    if (!detail) {
      this.progress.hidden = true;
      return;
    }
    this.progress.hidden = false;
    const steps = detail.step_runs ?? [];
    const done = steps.filter(s => !ACTIVE.has(s.status)).length;
    const total = detail.expected_steps ?? this.dag?.steps.length ?? null;
    const running = steps.find(s => ACTIVE.has(s.status));
    const next = running?.step ?? this.dag?.steps.find(s => !steps.some(r => r.step === s.name))?.name;
    const over = !ACTIVE.has(detail.status);
    const bar = h('div', { class: 'mlops-bar' });
    const fill = h('div', { class: 'mlops-bar-fill' });
    fill.style.width = total ? `${Math.min(100, (100 * done) / total)}%` : over ? '100%' : '0%';
    bar.appendChild(fill);
    const text = over
      ? [`run ${detail.status}`, total ? `${done} of ${total} steps` : '', duration(detail.duration)]
          .filter(Boolean)
          .join(' · ')
      : `${done} of ${total ?? '?'} steps done` + (next ? ` · now: ${next}` : '') + ` · ${detail.status}`;
    this.progress.className = `mlops-progress mlops-progress-${detail.status}`;
    this.progress.dataset.status = detail.status;
    this.progress.dataset.runId = detail.id;
    this.progress.replaceChildren(bar, h('div', { class: 'mlops-progress-text' }, text));
    if (over && detail.error) {
      this.progress.appendChild(h('div', { class: 'mlops-why mlops-why-error' }, detail.error));
    }
    this.runButton.disabled = !over || !this.dag;
  }

  private async loadRuns(): Promise<void> {
    try {
      const data = await requestAPI<{ runs: RunRecord[] }>('runs?limit=20');
      this.runList = data.runs;
      for (const [id, detail] of this.expanded) {
        const now = data.runs.find(r => r.id === id);
        if (now && (!detail || detail.status !== now.status || ACTIVE.has(now.status))) {
          await this.loadDetail(id);
        }
      }
      this.renderRuns();
    } catch (error) {
      this.runs.fail(error);
    }
  }

  private async loadDetail(id: string): Promise<void> {
    try {
      this.expanded.set(id, await requestAPI<RunDetail>(apiPath('runs', id)));
    } catch (error) {
      this.runs.fail(error);
    }
  }

  private async toggle(id: string): Promise<void> {
    if (this.expanded.has(id)) {
      this.expanded.delete(id);
    } else {
      this.expanded.set(id, null);
      this.renderRuns();
      await this.loadDetail(id);
    }
    this.renderRuns();
  }

  private renderRuns(): void {
    const key = JSON.stringify([this.runList, [...this.expanded]]);
    this.runs.show(key, () => {
      if (!this.runList.length) {
        return [h('div', { class: 'mlops-empty' }, 'No runs yet.')];
      }
      const list = h('ul', { class: 'mlops-run-list' });
      for (const run of this.runList) {
        const open = this.expanded.has(run.id);
        const row = h(
          'li',
          { class: `mlops-run-row${open ? ' mlops-open' : ''}`, 'data-run-id': run.id, 'data-status': run.status },
          h(
            'div',
            {
              class: 'mlops-run-head',
              role: 'button',
              tabindex: 0,
              title: 'Show the steps of this run',
              onclick: () => void this.toggle(run.id),
              onkeydown: (event: Event) => {
                const key = (event as KeyboardEvent).key;
                if (key === 'Enter' || key === ' ') {
                  event.preventDefault();
                  void this.toggle(run.id);
                }
              }
            },
            h(
              'div',
              { class: 'mlops-run-line' },
              h('span', { class: 'mlops-caret' }, open ? '▾' : '▸'),
              h('span', { class: 'mlops-run-name' }, run.pipeline ?? run.kind),
              statusPill(run.status),
              h('span', { class: 'mlops-muted mlops-right' }, duration(run.duration))
            ),
            h(
              'div',
              { class: 'mlops-run-meta mlops-muted' },
              [when(run.started_at), run.trigger, run.kind !== 'pipeline' ? run.kind : '', counts(run.step_counts)]
                .filter(Boolean)
                .join(' · ')
            ),
            h('div', { class: 'mlops-run-id mlops-muted' }, run.id)
          )
        );
        if (open) {
          row.appendChild(this.renderDetail(this.expanded.get(run.id) ?? null));
        }
        list.appendChild(row);
      }
      return [list];
    });
  }

  private renderDetail(detail: RunDetail | null): HTMLElement {
    if (!detail) {
      return h('div', { class: 'mlops-run-detail mlops-muted' }, 'loading…');
    }
    const box = h('div', { class: 'mlops-run-detail' });
    if (detail.error) {
      box.appendChild(h('div', { class: 'mlops-why mlops-why-error', title: detail.error }, detail.error));
    }
    const steps = detail.step_runs ?? [];
    const list = h('ul', { class: 'mlops-step-runs' });
    for (const s of steps) {
      list.appendChild(
        h(
          'li',
          { class: 'mlops-step-run', 'data-step': s.step, 'data-status': s.status },
          h(
            'div',
            { class: 'mlops-dag-line' },
            h('span', { class: 'mlops-dag-step-name' }, s.step),
            statusPill(s.status),
            h('span', { class: 'mlops-muted mlops-right' }, duration(s.duration))
          ),
          s.why ? h('div', { class: 'mlops-why', title: s.why }, s.why) : null,
          s.error ? h('div', { class: 'mlops-why mlops-why-error', title: s.error }, s.error) : null
        )
      );
    }
    if (steps.length) {
      box.appendChild(list);
    } else if (detail.kind === 'pipeline') {
      box.appendChild(h('div', { class: 'mlops-muted' }, 'no steps recorded'));
    }
    if (detail.links?.notebook) {
      box.appendChild(
        h(
          'a',
          {
            class: 'mlops-link mlops-notebook-link',
            href: apiUrl('runs', encodeURIComponent(detail.id), 'notebook'),
            target: '_blank',
            rel: 'noopener'
          },
          'Executed notebook ↗'
        )
      );
    }
    return box;
  }

  // models and approvals ---------------------------------------------------------------------------------------
  /** Load and show the models; their names (for the drift verdicts). */
  private async loadModels(): Promise<string[]> {
    try {
      const data = await requestAPI<Models>('models');
      this.renderModels(data);
      return data.models.map(m => m.name);
    } catch (error) {
      this.models.fail(error);
      return [];
    }
  }

  private renderModels(data: Models): void {
    const before = this.aliases ?? new Map<string, number>();
    const first = this.aliases === null;
    this.models.show(JSON.stringify(data), () => {
      this.aliases = new Map(
        data.models.flatMap(m => Object.entries(m.aliases ?? {}).map(([a, v]) => [`${m.name}@${a}`, v] as const))
      );
      if (!data.models.length) {
        return [h('div', { class: 'mlops-empty' }, 'No registered models.')];
      }
      const nodes: Node[] = [];
      const list = h('ul', { class: 'mlops-model-list' });
      for (const model of data.models) {
        const aliases = Object.entries(model.aliases ?? {}).sort();
        list.appendChild(
          h(
            'li',
            { class: 'mlops-model', 'data-model': model.name },
            h(
              'div',
              { class: 'mlops-dag-line' },
              h('span', { class: 'mlops-model-name' }, model.name),
              h('span', { class: 'mlops-muted mlops-right' }, model.latest ? `latest v${model.latest}` : '')
            ),
            h(
              'div',
              { class: 'mlops-aliases' },
              ...(aliases.length
                ? aliases.map(([alias, version]) => {
                    const key = `${model.name}@${alias}`;
                    const was = before.get(key);
                    const changed = !first && was !== version;
                    return h(
                      'span',
                      {
                        class: changed ? 'mlops-alias mlops-alias-moved' : 'mlops-alias',
                        'data-alias': alias,
                        'data-version': version,
                        title: changed && was ? `${alias} moved from v${was} to v${version}` : `${key} is v${version}`
                      },
                      `${alias} → v${version}`
                    );
                  })
                : [h('span', { class: 'mlops-muted' }, 'no aliases')])
            )
          )
        );
      }
      nodes.push(list);
      const queue = h('div', { class: 'mlops-approvals' }, h('h4', {}, `Waiting for approval (${data.pending.length})`));
      if (!data.pending.length) {
        queue.appendChild(h('div', { class: 'mlops-empty' }, 'Nothing waits for approval.'));
      }
      for (const p of data.pending) {
        const key = `${p.name}/${p.version}`;
        const note = h('input', {
          class: 'mlops-note',
          type: 'text',
          placeholder: 'note (optional)',
          'aria-label': `note for ${p.name} v${p.version}`
        }) as HTMLInputElement;
        note.value = this.notes.get(key) ?? '';
        note.addEventListener('input', () => this.notes.set(key, note.value));
        const current = data.models.find(m => m.name === p.name)?.aliases?.[p.alias ?? 'champion'];
        queue.appendChild(
          h(
            'div',
            { class: 'mlops-pending', 'data-model': p.name, 'data-version': p.version },
            h(
              'div',
              { class: 'mlops-dag-line' },
              h('span', { class: 'mlops-model-name' }, `${p.name} v${p.version}`),
              h(
                'span',
                { class: 'mlops-muted mlops-right' },
                `→ ${p.alias ?? 'champion'}` + (current ? ` (now v${current})` : '')
              )
            ),
            p.metrics ? h('div', { class: 'mlops-muted mlops-metrics' }, metrics(p.metrics)) : null,
            note,
            h(
              'div',
              { class: 'mlops-actions' },
              h(
                'button',
                {
                  class: 'mlops-button mlops-approve',
                  type: 'button',
                  'data-model': p.name,
                  'data-version': p.version,
                  onclick: (e: Event) => void this.decide(e, 'approve', p.name, p.version, key)
                },
                'Approve'
              ),
              h(
                'button',
                {
                  class: 'mlops-button mlops-reject',
                  type: 'button',
                  'data-model': p.name,
                  'data-version': p.version,
                  onclick: (e: Event) => void this.decide(e, 'reject', p.name, p.version, key)
                },
                'Reject'
              )
            )
          )
        );
      }
      nodes.push(queue);
      return nodes;
    });
  }

  private async decide(
    event: Event,
    verb: 'approve' | 'reject',
    name: string,
    version: number,
    key: string
  ): Promise<void> {
    const box = (event.target as HTMLElement).closest('.mlops-pending');
    box?.querySelectorAll('button').forEach(b => ((b as HTMLButtonElement).disabled = true));
    try {
      const answer = await postAPI<{ result?: Record<string, unknown> }>(
        apiPath('models', name, String(version), verb),
        { note: this.notes.get(key) ?? '' }
      );
      this.notes.delete(key);
      this.say(describe(verb, name, version, answer.result));
    } catch (error) {
      this.models.fail(error);
      box?.querySelectorAll('button').forEach(b => ((b as HTMLButtonElement).disabled = false));
    }
    this.poke(true);
  }

  // deployments and drift --------------------------------------------------------------------------------------
  private async loadDeployments(models: string[]): Promise<void> {
    try {
      const data = await requestAPI<{ deployments: Deployment[] }>('deployments');
      const names = new Set<string>(models);
      for (const d of data.deployments) {
        names.add(d.model ?? d.name);
      }
      const drift = await Promise.all(
        [...names].sort().map(name =>
          requestAPI<Monitoring>(apiPath('monitoring', name)).catch(
            (error: unknown) => ({ model: name, report: null, error: oneLine(error) }) as Monitoring & { error: string }
          )
        )
      );
      this.renderDeployments(data.deployments, drift);
    } catch (error) {
      this.deployments.fail(error);
    }
  }

  private renderDeployments(deployments: Deployment[], drift: (Monitoring & { error?: string })[]): void {
    this.deployments.show(JSON.stringify([deployments, drift]), () => {
      const nodes: Node[] = [];
      const list = h('ul', { class: 'mlops-deployment-list' });
      for (const d of deployments) {
        const healthy = d.healthy ?? d.answering !== false;
        const version = d.version ?? d.stable?.version;
        const alias = d.alias ?? d.watch;
        const model = `${d.model ?? d.name}${alias ? `@${alias}` : ''}${version ? ` (v${version})` : ''}`;
        list.appendChild(
          h(
            'li',
            { class: 'mlops-deployment', 'data-deployment': d.name, 'data-healthy': String(healthy) },
            h(
              'div',
              { class: 'mlops-dag-line' },
              h('span', { class: 'mlops-model-name' }, d.name),
              statusPill(healthy ? 'healthy' : 'down')
            ),
            h('div', { class: 'mlops-muted' }, model),
            d.url ? h('div', { class: 'mlops-url', title: d.url }, d.url) : null
          )
        );
      }
      nodes.push(deployments.length ? list : h('div', { class: 'mlops-empty' }, 'Nothing deployed.'));
      const monitored = drift.filter(m => m.report || m.error);
      const verdicts = h('ul', { class: 'mlops-drift-list' });
      for (const m of monitored) {
        const r = m.report;
        const verdict = m.error ? 'error' : r?.dataset_drift ? 'drift' : 'no-drift';
        const link = m.links?.report ?? m.report_file;
        verdicts.appendChild(
          h(
            'li',
            { class: 'mlops-drift', 'data-model': m.model, 'data-verdict': verdict },
            h(
              'div',
              { class: 'mlops-dag-line' },
              h('span', { class: 'mlops-model-name' }, m.model),
              statusPill(verdict, verdict === 'no-drift' ? 'no drift' : verdict)
            ),
            m.error
              ? h('div', { class: 'mlops-why mlops-why-error' }, m.error)
              : h(
                  'div',
                  { class: 'mlops-muted' },
                  [
                    r?.drift_share !== null && r?.drift_share !== undefined
                      ? `${Math.round(100 * r.drift_share)}% of columns drifted`
                      : '',
                    r?.drifted?.length ? r.drifted.slice(0, 4).join(', ') : '',
                    when(r?.created ?? r?.until)
                  ]
                    .filter(Boolean)
                    .join(' · ')
                ),
            link
              ? h(
                  'a',
                  {
                    class: 'mlops-link mlops-report-link',
                    href: apiUrl('monitoring', encodeURIComponent(m.model), 'report'),
                    target: '_blank',
                    rel: 'noopener'
                  },
                  'Drift report ↗'
                )
              : null
          )
        );
      }
      nodes.push(h('h4', {}, 'Latest drift verdict'));
      nodes.push(monitored.length ? verdicts : h('div', { class: 'mlops-empty' }, 'No model monitored yet.'));
      return nodes;
    });
  }

  // notices ----------------------------------------------------------------------------------------------------
  private say(text: string): void {
    this.notice.hidden = false;
    this.notice.textContent = text;
  }
}

function describe(verb: string, name: string, version: number, result?: Record<string, unknown>): string {
  if (!result) {
    return `${name} v${version}: ${verb}d`;
  }
  const alias = result.alias ?? 'champion';
  const previous = result.previous;
  if (result.outcome === 'approved') {
    return `${name} v${version} approved: ${alias} ${previous ? `v${previous} → ` : '→ '}v${version}`;
  }
  return `${name} v${version} ${String(result.outcome ?? verb + 'd')}`;
}

