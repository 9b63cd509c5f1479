import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { LookupFunction } from 'node:net'

/**
 * The doctor's HTTP client: one request at a time, each with a deadline, the body read up to a
 * cap, redirects followed only as the MCP SDK v2 client follows them (same origin, method kept),
 * and every failure turned into a sentence instead of an exception.
 */

/** No discovery document comes near this; a larger answer is not read to its end. */
export const BODY_LIMIT = 256 * 1024
/** The v2 SDK's own limit is in this range; more is a misconfiguration whatever the client. */
export const MAX_REDIRECTS = 5

export interface HttpOptions {
  /** Milliseconds one request may take, connection to last byte. */
  timeoutMs: number
  /** Epoch milliseconds after which no request starts or goes on (the run's budget). */
  deadline: number
  /** Name resolution (tests map made-up names to loopback); Node's default otherwise. */
  lookup?: LookupFunction
  /** Extra trusted certificates for https (tests); NODE_EXTRA_CA_CERTS serves users. */
  ca?: string | Buffer
}

export interface ProbeRequest {
  method: 'GET' | 'POST' | 'OPTIONS'
  url: URL
  headers?: Record<string, string>
  body?: string
}

export interface Answer {
  /** Where the answer came from (after any redirects followed). */
  url: URL
  status: number
  headers: IncomingHttpHeaders
  body: string
  /** The URLs redirected to, in order; empty when the first URL answered. */
  redirects: URL[]
}

export type Probe = { ok: true, answer: Answer } | { ok: false, problem: string }

/** One request, no redirect followed. */
export function send (req: ProbeRequest, opts: HttpOptions): Promise<Probe> {
  const timeout = Math.min(opts.timeoutMs, opts.deadline - Date.now())
  if (timeout <= 0) return Promise.resolve({ ok: false, problem: 'not sent: the run is out of time' })
  const secure = req.url.protocol === 'https:'
  return new Promise(resolve => {
    let settled = false
    const finish = (probe: Probe): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve(probe)
    }
    const headers: Record<string, string> = { 'user-agent': 'fastify-mcp-oauth-doctor', ...req.headers }
    if (req.body !== undefined) headers['content-length'] = String(Buffer.byteLength(req.body))
    const outgoing = (secure ? httpsRequest : httpRequest)(req.url, {
      method: req.method,
      headers,
      // A connection per request: nothing pooled outlives the run or carries state between checks.
      agent: false,
      ...(opts.lookup !== undefined ? { lookup: opts.lookup } : {}),
      ...(secure && opts.ca !== undefined ? { ca: opts.ca } : {})
    })
    const timer = setTimeout(() => {
      finish({ ok: false, problem: `no complete answer within ${timeout} ms` })
      outgoing.destroy()
    }, timeout)
    outgoing.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, problem: networkProblem(err, req.url) }))
    outgoing.on('response', res => {
      const declared = Number(res.headers['content-length'])
      if (declared > BODY_LIMIT) {
        finish({ ok: false, problem: tooLarge(res.statusCode) })
        res.destroy()
        return
      }
      const chunks: Buffer[] = []
      let size = 0
      res.on('data', (chunk: Buffer) => {
        size += chunk.length
        if (size > BODY_LIMIT) {
          finish({ ok: false, problem: tooLarge(res.statusCode) })
          res.destroy()
          return
        }
        chunks.push(chunk)
      })
      res.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, problem: networkProblem(err, req.url) }))
      res.on('end', () => finish({
        ok: true,
        answer: { url: req.url, status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8'), redirects: [] }
      }))
    })
    outgoing.end(req.body)
  })
}

function tooLarge (status: number | undefined): string {
  return `answer (${status}) larger than ${BODY_LIMIT / 1024} KiB: stopped reading`
}

/** What went wrong on the wire, in words (the error's message may be long or odd; its code is not). */
function networkProblem (err: NodeJS.ErrnoException, url: URL): string {
  const where = url.host
  switch (err.code) {
    case 'ECONNREFUSED': return `connection refused: nothing listens at ${where}`
    case 'ENOTFOUND': case 'EAI_AGAIN': return `the name ${url.hostname} does not resolve`
    case 'ECONNRESET': case 'EPIPE': return `${where} closed the connection before answering`
    case 'EHOSTUNREACH': case 'ENETUNREACH': return `${where} is unreachable`
    case 'HPE_INVALID_CONSTANT': case 'HPE_INVALID_VERSION': case 'HPE_INVALID_STATUS': case 'HPE_INVALID_HEADER_TOKEN':
      return `${where} does not answer HTTP/1.1 (${err.code})`
  }
  if (err.code !== undefined && /CERT|SSL|TLS|SELF_SIGNED|ERR_TLS/.test(err.code)) return `TLS with ${where} failed (${err.code})`
  return `request to ${where} failed (${err.code ?? 'network error'})`
}

const REDIRECTS = new Set([301, 302, 303, 307, 308])

/**
 * A request, following redirects the way the MCP SDK v2 client does: only within the origin and
 * only when the method survives (any GET; 307/308 for other methods). An unfollowed redirect is
 * returned as the answer; a loop or too many hops is a problem.
 */
export async function follow (req: ProbeRequest, opts: HttpOptions): Promise<Probe> {
  const seen = [req.url.href]
  const redirects: URL[] = []
  let current = req
  for (;;) {
    const probe = await send(current, opts)
    if (!probe.ok) return probe
    const { answer } = probe
    answer.redirects = redirects
    const target = redirectTarget(answer)
    if (target === null || target.origin !== current.url.origin ||
      (current.method !== 'GET' && answer.status !== 307 && answer.status !== 308)) return probe
    if (seen.includes(target.href)) return { ok: false, problem: `redirect loop: ${[...seen, target.href].join(' -> ')}` }
    if (redirects.length === MAX_REDIRECTS) return { ok: false, problem: `more than ${MAX_REDIRECTS} redirects, starting ${seen.slice(0, 3).join(' -> ')} ...` }
    seen.push(target.href)
    redirects.push(target)
    current = { ...current, url: target }
  }
}

/** The Location of a redirect answer, or null when the answer is no (usable) redirect. */
export function redirectTarget (answer: Answer): URL | null {
  const location = answer.headers.location
  if (!REDIRECTS.has(answer.status) || location === undefined) return null
  try {
    return new URL(location, answer.url)
  } catch {
    return null
  }
}

export type Json = { ok: true, value: Record<string, unknown> } | { ok: false, problem: string }

/** The answer's body as a JSON object, or why it is not one (HTML pages get their own words). */
export function jsonObject (answer: Answer): Json {
  const type = String(answer.headers['content-type'] ?? '')
  const text = answer.body.trimStart()
  if (/html/i.test(type) || text.startsWith('<')) {
    return { ok: false, problem: 'answered HTML, not JSON (a login page, a proxy\'s error page or the application\'s catch-all route?)' }
  }
  let value: unknown
  try {
    value = JSON.parse(answer.body)
  } catch {
    return { ok: false, problem: `not valid JSON (${Buffer.byteLength(answer.body)} bytes starting ${quote(answer.body.slice(0, 40))})` }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return { ok: false, problem: 'JSON, but not an object' }
  return { ok: true, value: value as Record<string, unknown> }
}

/**
 * A string from the network, fit to print on a terminal line: quoted, shortened, and every
 * character outside printable ASCII escaped (no control sequence or bidi override gets through).
 */
export function quote (value: string, max = 120): string {
  const cut = value.length > max ? value.slice(0, max) + '...' : value
  return JSON.stringify(cut).replace(/[^\x20-\x7e]/g, c => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}
