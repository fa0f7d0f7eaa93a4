/**
 * The HTTP port the provisioning client talks through. platform/https-client.ts implements it
 * with node:https; tests implement it in memory. Implementations throw ProvisioningError with
 * code "server-unreachable", "server-cert-untrusted", "server-cert-time" or "timeout" when no
 * HTTP response arrives; any HTTP status (401, 500, …) is a response, not an exception.
 */
export interface HttpRequest {
  method: "GET" | "POST";
  url: string;
  headers?: Record<string, string>;
  body?: string;
}

export interface HttpResponse {
  status: number;
  /** Header names as the transport gives them (node: lower case); look up with headerValues(). */
  headers: Record<string, string | string[]>;
  body: string;
}

export interface HttpClient {
  request(r: HttpRequest): Promise<HttpResponse>;
}

/** Every value of a header, case-insensitive on the name; repeated headers stay separate. */
export function headerValues(headers: HttpResponse["headers"], name: string): string[] {
  const want = name.toLowerCase();
  const out: string[] = [];
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() !== want) continue;
    if (Array.isArray(v)) out.push(...v);
    else out.push(v);
  }
  return out;
}

export function headerValue(headers: HttpResponse["headers"], name: string): string | undefined {
  const all = headerValues(headers, name);
  return all.length === 0 ? undefined : all.join(", ");
}

/** The service URL with one path segment appended (no doubled slash). */
export function joinUrl(base: string, segment: string): string {
  return `${base.replace(/\/+$/, "")}/${segment.replace(/^\/+/, "")}`;
}
