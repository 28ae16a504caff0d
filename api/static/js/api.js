// fetch() wrapper for the jobstream API: JSON in and out, the bearer token when one is saved, errors as ApiError.

const TOKEN_KEY = "jobstream.apiToken";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function getToken() {
  return localStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`; // reads may need it too (API_READS_REQUIRE_TOKEN)
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiError(0, "The API is not reachable");
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = new ApiError(response.status, (data && data.error) || `${response.status} ${response.statusText}`);
    if (response.status === 401) window.dispatchEvent(new CustomEvent("auth-required", { detail: error.message }));
    throw error;
  }
  return data;
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// A session cookie (HttpOnly) for reads the page cannot add a header to: EventSource. Opened with the
// saved token; false when the API refuses it (wrong token) or has no API_TOKEN (then none is needed).
export async function openSession(token) {
  if (!token) return false;
  try {
    const response = await fetch("/api/session", {
      method: "POST", headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify({ token }),
    });
    return response.status === 204;
  } catch {
    return false;
  }
}
