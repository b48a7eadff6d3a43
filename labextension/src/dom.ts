// A tiny DOM builder (text always goes in as textContent, never as HTML) and formatting helpers.

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

/** An element with attributes (``on*`` ones are listeners, ``class`` the class name) and children. */
export function h(tag: string, attrs: Attrs = {}, ...children: Child[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) {
      continue;
    }
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2).toLowerCase(), value as EventListener);
    } else if (key === 'class') {
      el.className = String(value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) {
      continue;
    }
    el.appendChild(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return el;
}

/** A status word as a coloured pill: ``.mlops-status.mlops-status-<status>``. */
export function statusPill(status: string, label?: string): HTMLElement {
  return h('span', { class: `mlops-status mlops-status-${status}`, 'data-status': status }, label ?? status);
}

/** Seconds as ``0.4 s``, ``12 s``, ``3m 05s``. */
export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) {
    return '';
  }
  if (seconds < 10) {
    return `${seconds.toFixed(1)} s`;
  }
  if (seconds < 60) {
    return `${Math.round(seconds)} s`;
  }
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  return `${m}m ${String(s).padStart(2, '0')}s`;
}

/** An ISO time as ``14:03:22`` today, else ``Mar 4 14:03``. */
export function when(iso: string | null | undefined): string {
  if (!iso) {
    return '';
  }
  const hasZone = /[zZ]|[+-]\d\d:?\d\d$/.test(iso);
  const date = new Date(hasZone ? iso : `${iso}Z`);
  if (isNaN(date.getTime())) {
    return iso;
  }
  const now = new Date();
  const time = date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  if (date.toDateString() === now.toDateString()) {
    return time;
  }
  return `${date.toLocaleDateString([], { month: 'short', day: 'numeric' })} ${time.slice(0, 5)}`;
}

/** Step counts as ``4 succeeded · 2 cached``. */
export function counts(stepCounts: Record<string, number> | undefined): string {
  if (!stepCounts) {
    return '';
  }
  return Object.entries(stepCounts)
    .filter(([, n]) => n > 0)
    .map(([status, n]) => `${n} ${status}`)
    .join(' · ');
}

/** Metrics as ``accuracy 0.81 · roc_auc 0.88``. */
export function metrics(values: Record<string, number> | undefined, limit = 3): string {
  if (!values) {
    return '';
  }
  return Object.entries(values)
    .slice(0, limit)
    .map(([k, v]) => `${k} ${typeof v === 'number' ? (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(3)) : v}`)
    .join(' · ');
}
