// The shapes the mlops_nb REST API answers with (only the fields the sidebar reads).

export interface RunBrief {
  id: string;
  status: string;
  started_at: string | null;
  trigger?: string;
}

export interface DagStep {
  name: string;
  cell: number;
  inputs: string[];
  outputs: string[];
  upstream: string[];
  status: string;
  why: string | null;
  step_run: string | null;
  duration: number | null;
  error?: string | null;
}

export interface Dag {
  path: string;
  name: string;
  steps: DagStep[];
  edges: { from: string; to: string; name: string }[];
  report_cells: number[];
  last_run: RunBrief | null;
}

export interface RunRecord {
  id: string;
  pipeline: string | null;
  status: string;
  kind: string;
  trigger: string;
  fired_by?: string | null;
  notebook?: string | null;
  started_at: string | null;
  ended_at: string | null;
  duration: number | null;
  step_counts?: Record<string, number>;
  error?: string | null;
}

export interface StepRun {
  id: string;
  step: string;
  status: string;
  why: string | null;
  duration: number | null;
  error: string | null;
  cell?: number | null;
}

export interface RunDetail extends RunRecord {
  step_runs?: StepRun[];
  expected_steps?: number | null;
  links?: { notebook?: string | null };
  executed_notebook?: string | null;
}

export interface ModelBrief {
  name: string;
  latest: number | null;
  aliases: Record<string, number>;
}

export interface PendingVersion {
  name: string;
  version: number;
  alias: string | null;
  metrics?: Record<string, number>;
}

export interface Models {
  models: ModelBrief[];
  pending: PendingVersion[];
}

export interface Deployment {
  name: string;
  model?: string;
  version?: number | null;
  alias?: string | null;
  url?: string | null;
  healthy?: boolean | null;
  answering?: boolean;
  watch?: string | null;
  stable?: { version?: number | null } | null;
}

export interface DriftSummary {
  dataset_drift: boolean | null;
  drift_share?: number | null;
  drifted?: string[];
  created?: string | null;
  until?: string | null;
  run_id?: string | null;
}

export interface Monitoring {
  model: string;
  report: DriftSummary | null;
  alerts?: unknown[];
  links?: { report?: string | null };
  report_file?: string | null;
}

/** Statuses of a run or step that is not over yet. */
export const ACTIVE = new Set(['starting', 'running', 'pending', 'queued']);
