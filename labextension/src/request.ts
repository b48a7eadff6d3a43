// The one path to the mlops_nb REST API (/mlops/api/...): ServerConnection adds the base URL, the auth token and
// the XSRF header; an error answer ({"error": "one line"}) becomes an Error with that line.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export const API_ROOT = 'mlops/api';

/** The absolute URL of an API path (for links that open in a new browser tab). */
export function apiUrl(...parts: string[]): string {
  const settings = ServerConnection.makeSettings();
  return URLExt.join(settings.baseUrl, API_ROOT, ...parts);
}

/** An API path with each segment URL-encoded (a notebook path keeps its slashes). */
export function apiPath(...parts: string[]): string {
  return parts
    .map(part =>
      part
        .split('/')
        .map(s => encodeURIComponent(s))
        .join('/')
    )
    .join('/');
}

/** Call the API; resolve with its JSON, or reject with a one-line Error. */
export async function requestAPI<T>(
  endpoint: string,
  init: RequestInit = {}
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, API_ROOT, endpoint);
  if (init.body !== undefined && init.headers === undefined) {
    init = { ...init, headers: { 'Content-Type': 'application/json' } };
  }
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new Error(`the Jupyter server did not answer (${oneLine(error)})`);
  }
  const text = await response.text();
  let data: any = null;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const message =
      (data && (data.error || data.message)) ||
      (response.status === 404
        ? `${endpoint.split('?')[0]} is not served (is the mlops_nb server extension enabled?)`
        : `${response.status} ${response.statusText}`);
    throw new Error(String(message).split('\n')[0]);
  }
  return data as T;
}

/** POST a JSON body. */
export function postAPI<T>(endpoint: string, body: unknown): Promise<T> {
  return requestAPI<T>(endpoint, { method: 'POST', body: JSON.stringify(body) });
}

/** Any thrown value as one line of text. */
export function oneLine(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split('\n')[0];
}
