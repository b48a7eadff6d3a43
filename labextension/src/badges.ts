// Step-cell badges: each code cell starting with `%%mlops step NAME` shows its step's last status and why.
import { NotebookPanel } from '@jupyterlab/notebook';

import { Dag } from './types';

const STEP_LINE = /^\s*%%mlops\s+step\s+([^\s-][^\s]*)/;
const STEP_CELL = /^\s*%%mlops\s+step\b/;
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
  // a step line with its options first (`%%mlops step --no-cache load`) is matched by its saved cell number
  const byCell = new Map((dag?.steps ?? []).map(step => [step.cell, step]));
  panel.content.widgets.forEach((cell, index) => {
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
    const source = cell.model.type === 'code' ? cell.model.sharedModel.getSource() : '';
    const named = stepOf(source);
    const step = (named ? steps.get(named) : undefined) ?? (STEP_CELL.test(source) ? byCell.get(index + 1) : undefined);
    const name = step?.name;
    if (!name || !step) {
      old?.remove();
      node.classList.remove('mlops-step-input');
      return;
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
      return;
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
  });
}
