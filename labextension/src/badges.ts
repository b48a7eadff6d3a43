// Step-cell badges: each code cell starting with `%%mlops step NAME` shows its step's last status and why.
import { NotebookPanel } from '@jupyterlab/notebook';

import { Dag } from './types';

const STEP_LINE = /^\s*%%mlops\s+step\s+([^\s]+)/;
const LABELS: Record<string, string> = {
  succeeded: 'ran',
  cached: 'cached',
  failed: 'failed',
  running: 'running',
  skipped: 'skipped',
  interrupted: 'interrupted',
  pending: 'waiting',
  never: 'not run yet'
};

/** The step a cell's source declares, or null. */
export function stepOf(source: string): string | null {
  const match = STEP_LINE.exec(source);
  return match ? match[1] : null;
}

/** Put (or update, or remove) a badge on every step cell of ``panel`` from ``dag`` (null: remove all). */
export function applyBadges(panel: NotebookPanel, dag: Dag | null): void {
  const steps = new Map((dag?.steps ?? []).map(step => [step.name, step]));
  for (const cell of panel.content.widgets) {
    // the badge sits at the bottom right of the input (the cell toolbar takes the top right of the active cell)
    const node = cell.inputArea?.node ?? cell.node;
    // one badge per cell: a badge put on the cell before its input area was rendered goes
    let old: Element | null = null;
    for (const badge of Array.from(cell.node.querySelectorAll('.mlops-badge'))) {
      if (badge.parentElement === node && old === null) {
        old = badge;
      } else {
        badge.remove();
      }
    }
    const name = cell.model.type === 'code' ? stepOf(cell.model.sharedModel.getSource()) : null;
    const step = name ? steps.get(name) : undefined;
    if (!name || !step) {
      old?.remove();
      node.classList.remove('mlops-step-input');
      continue;
    }
    const status = step.status || 'never';
    const why = step.error ? `${step.why ?? ''} ${step.error}`.trim() : step.why ?? '';
    const text = `${name}: ${LABELS[status] ?? status}`;
    const title = why ? `${text} — ${why}` : text;
    if (
      old instanceof HTMLElement &&
      old.dataset.status === status &&
      old.dataset.step === name &&
      old.title === title
    ) {
      continue;
    }
    const badge = document.createElement('div');
    badge.className = `mlops-badge mlops-badge-${status}`;
    badge.dataset.step = name;
    badge.dataset.status = status;
    badge.title = title;
    const label = document.createElement('span');
    label.className = 'mlops-badge-label';
    label.textContent = LABELS[status] ?? status;
    badge.appendChild(label);
    if (why) {
      const reason = document.createElement('span');
      reason.className = 'mlops-badge-why';
      reason.textContent = why;
      badge.appendChild(reason);
    }
    node.classList.add('mlops-step-input');
    if (old) {
      old.replaceWith(badge);
    } else {
      node.appendChild(badge);
    }
  }
}
