import { lookup as dnsLookup } from 'node:dns/promises'
import type { IncomingHttpHeaders } from 'node:http'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { isIP, type LookupFunction } from 'node:net'
import { errors } from '../errors.js'
import { isForbiddenAddress, isPrivateHost } from '../oauth/address.js'

/**
 * An SSRF-safe GET of a small JSON document at a URL that a stranger chose (a client metadata
 * document; a JWKS). Deliberately narrow: https only, the host resolved once here with every address
 * checked, the connection pinned to a checked address (no second resolution, so no DNS rebinding),
 * no redirects, one total deadline, a byte cap enforced while streaming, one media type.
 *
 * Every refusal and failure is an `errors.FETCH_FAILED` whose message is the reason ("the server
 * answered HTTP 404; 200 is required"): the caller says what was being fetched. An abort through
 * the caller's signal rejects with the signal's reason.
 */

export interface ResolvedAddress {
  address: string
  family: 4 | 6
}

export interface SafeFetchOptions {
  /** Total deadline for DNS, connect, TLS, headers and body. */
  timeoutMs: number
  /** Largest accepted body. */
  maxBytes: number
  /**
   * The media type accepted (and asked for), or several (the first is preferred); a `charset`
   * parameter, if any, must be UTF-8.
   */
  mediaType: string | readonly string[]
  userAgent: string
  /**
   * TEST ONLY: allow hosts that are (or resolve to) loopback, private, link-local or other
   * special-use addresses. Never enable this in production: it turns the fetcher into an SSRF tool.
   */
  allowPrivateAddresses?: boolean
  /**
   * Also fetch `http:` URLs whose host is a loopback literal (127.0.0.1, ::1) or `localhost`, for
   * URLs an operator configured (a development identity provider), never for a stranger's.
   */
  allowHttpLoopback?: boolean
  /** Name resolution, called once per fetch. Default: `dns.promises.lookup` with `all: true`. */
  lookup?: (hostname: string) => Promise<ResolvedAddress[]>
  /**
   * TEST ONLY: trusted CA certificate(s) for the TLS connection, replacing the system roots (for a
   * test server with a self-signed certificate).
   */
  ca?: string | Buffer | Array<string | Buffer>
}

/** What tests may replace (the `cimdTestHooks` option): name resolution and the trusted CA. */
export type FetchTestHooks = Pick<SafeFetchOptions, 'lookup' | 'ca'>

export interface Fetched {
  body: Buffer
  headers: IncomingHttpHeaders
}

function fail (reason: string, cause?: unknown): Error {
  return new errors.FETCH_FAILED(reason, ...(cause === undefined ? [] : [{ cause }]))
}

/** A network error reduced to message and code: parser errors carry the raw bytes received. */
export function fetchFailure (reason: string, err: unknown): Error {
  const code = errorCode(err)
  const message = err instanceof Error ? err.message : String(err)
  return fail(`${reason} (${code})`, Object.assign(new Error(message), { code }))
}

export class SafeFetcher {
  readonly #o: SafeFetchOptions
  readonly #lookup: (hostname: string) => Promise<ResolvedAddress[]>

  constructor (opts: SafeFetchOptions) {
    this.#o = opts
    this.#lookup = opts.lookup ?? defaultLookup
  }

  /** GET an https URL under the deadline; `signal` aborts it early (rejecting with its reason). */
  async get (url: URL, signal?: AbortSignal): Promise<Fetched> {
    const controller = new AbortController()
    const onAbort = (): void => controller.abort(signal?.reason)
    signal?.addEventListener('abort', onAbort, { once: true })
    if (signal?.aborted === true) onAbort()
    const timer = setTimeout(() => controller.abort(fail(`no complete answer within ${this.#o.timeoutMs} ms`)), this.#o.timeoutMs)
    try {
      const addresses = await this.#addresses(url, controller.signal)
      return await this.#request(url, addresses, controller.signal)
    } finally {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /** Resolve the host once and check every address; the request connects only to these. */
  async #addresses (url: URL, signal: AbortSignal): Promise<ResolvedAddress[]> {
    const host = bareHost(url.hostname)
    if (url.protocol !== 'https:' && !(url.protocol === 'http:' && this.#o.allowHttpLoopback === true && isLoopbackName(host))) {
      throw fail('the URL must use https')
    }
    const literal = isIP(host)
    const allowPrivate = this.#o.allowPrivateAddresses === true || url.protocol === 'http:'
    let addresses: ResolvedAddress[]
    if (literal !== 0) {
      addresses = [{ address: host, family: literal === 6 ? 6 : 4 }]
    } else {
      if (!allowPrivate && isPrivateHost(host)) throw fail('the host name is local or special-use')
      let found: ResolvedAddress[]
      try {
        found = await abortable(this.#lookup(host), signal)
      } catch (err) {
        if (signal.aborted) throw signal.reason
        throw fetchFailure('the host name could not be resolved', err)
      }
      if (!Array.isArray(found) || found.length === 0) throw fail('the host name has no address')
      addresses = found.map(a => {
        const family = isIP(a?.address ?? '')
        if (family === 0) throw fail('the host name resolved to something that is not an IP address')
        return { address: a.address, family: family === 6 ? 6 : 4 }
      })
    }
    if (!allowPrivate && addresses.some(a => isForbiddenAddress(a.address))) {
      throw fail('the host resolves to a private, loopback, link-local or special-use address')
    }
    return addresses
  }

  #request (url: URL, addresses: ResolvedAddress[], signal: AbortSignal): Promise<Fetched> {
    const { maxBytes, mediaType, ca } = this.#o
    const host = bareHost(url.hostname)
    // The socket connects to the checked addresses only; TLS still verifies the certificate
    // against the real host name (SNI and Host header stay the name from the URL).
    const pinned: LookupFunction = (_hostname, options, callback) => {
      if (options.all === true) {
        callback(null, addresses.map(a => ({ address: a.address, family: a.family })))
      } else {
        const first = addresses[0] as ResolvedAddress
        callback(null, first.address, first.family)
      }
    }
    return new Promise<Fetched>((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason)
        return
      }
      let settled = false
      const done = (err: unknown, value?: Fetched): void => {
        if (settled) return
        settled = true
        signal.removeEventListener('abort', onAbort)
        if (err === null) {
          resolve(value as Fetched)
        } else {
          req.destroy()
          reject(err)
        }
      }
      const onAbort = (): void => done(signal.reason)
      const common = {
        hostname: host,
        path: url.pathname + url.search,
        method: 'GET',
        headers: { accept: typeof mediaType === 'string' ? mediaType : mediaType.join(', '), 'user-agent': this.#o.userAgent },
        agent: false,
        lookup: pinned,
        maxHeaderSize: 16384
      } as const
      // Plain http only reaches here for a loopback host the options allowed (see #addresses).
      const req = url.protocol === 'http:'
        ? httpRequest({ ...common, protocol: 'http:', port: url.port === '' ? 80 : Number(url.port) })
        : httpsRequest({
          ...common,
          protocol: 'https:',
          port: url.port === '' ? 443 : Number(url.port),
          ...(isIP(host) === 0 ? { servername: host } : {}),
          ...(ca === undefined ? {} : { ca }),
          minVersion: 'TLSv1.2',
          rejectUnauthorized: true
        })
      signal.addEventListener('abort', onAbort, { once: true })
      req.on('error', err => done(fetchFailure('the document could not be fetched', err)))
      req.on('response', res => {
        res.on('error', err => done(fetchFailure('the connection failed while reading the document', err)))
        const status = res.statusCode ?? 0
        if (status >= 300 && status < 400) {
          done(fail(`the server answered with a redirect (HTTP ${status}); redirects are not followed`))
          return
        }
        if (status !== 200) {
          done(fail(`the server answered HTTP ${status}; 200 is required`))
          return
        }
        const typeProblem = contentTypeProblem(res.headers['content-type'], mediaType)
        if (typeProblem !== null) {
          done(fail(typeProblem))
          return
        }
        const encoding = res.headers['content-encoding']
        if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') {
          done(fail('the document must not be content-encoded'))
          return
        }
        const declared = res.headers['content-length']
        if (declared !== undefined && Number(declared) > maxBytes) {
          done(fail(`the document is larger than ${maxBytes} bytes`))
          return
        }
        const chunks: Buffer[] = []
        let size = 0
        res.on('data', (chunk: Buffer) => {
          size += chunk.length
          if (size > maxBytes) {
            done(fail(`the document is larger than ${maxBytes} bytes`))
            return
          }
          chunks.push(chunk)
        })
        res.on('end', () => done(null, { body: Buffer.concat(chunks), headers: res.headers }))
        res.on('close', () => done(fail('the connection closed before the document was complete')))
      })
      req.end()
    })
  }
}

async function defaultLookup (hostname: string): Promise<ResolvedAddress[]> {
  const found = await dnsLookup(hostname, { all: true, verbatim: true })
  return found.map(a => ({ address: a.address, family: a.family === 6 ? 6 : 4 }))
}

function abortable<T> (promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason)
      return
    }
    const onAbort = (): void => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(
      value => {
        signal.removeEventListener('abort', onAbort)
        resolve(value)
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(err)
      }
    )
  })
}

function errorCode (err: unknown): string {
  const code = (err as { code?: unknown })?.code
  return typeof code === 'string' && /^[A-Z0-9_]{1,64}$/.test(code) ? code : 'network error'
}

function bareHost (hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname
}

function contentTypeProblem (header: string | undefined, mediaType: string | readonly string[]): string | null {
  const accepted = typeof mediaType === 'string' ? [mediaType] : mediaType
  if (header === undefined) return `the response has no Content-Type; ${accepted.join(' or ')} is required`
  const [type, ...params] = header.split(';')
  if (!accepted.includes((type as string).trim().toLowerCase())) return `the Content-Type must be ${accepted.join(' or ')}`
  for (const param of params) {
    const eq = param.indexOf('=')
    const name = (eq < 0 ? param : param.slice(0, eq)).trim().toLowerCase()
    const value = eq < 0 ? '' : param.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1').toLowerCase()
    if (name === 'charset' && value !== 'utf-8' && value !== 'utf8') return 'the document must be encoded in UTF-8'
  }
  return null
}

function isLoopbackName (host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
}

/**
 * How long a fetched document may be reused, in seconds, from its caching headers: `max-age` (minus
 * `Age`), else `Expires` - `Date`, else `min`; `no-store` and `no-cache` mean `min`. Always clamped
 * to [min, max]: the floor keeps requests from making this server fetch on every call.
 */
export function cacheSeconds (headers: IncomingHttpHeaders, min: number, max: number): number {
  const directives = parseCacheControl(headers['cache-control'])
  let lifetime: number | undefined
  if (directives.has('no-store') || directives.has('no-cache')) {
    lifetime = min
  } else if (directives.has('max-age')) {
    const value = directives.get('max-age') ?? ''
    lifetime = /^\d+$/.test(value) ? Number(value) : 0 // an invalid max-age means stale
  } else if (headers.expires !== undefined) {
    const expires = Date.parse(headers.expires)
    const date = headers.date === undefined ? NaN : Date.parse(headers.date)
    lifetime = Number.isNaN(expires) || Number.isNaN(date) ? 0 : (expires - date) / 1000
  }
  if (lifetime === undefined) lifetime = min
  const age = Number(headers.age)
  if (Number.isFinite(age) && age > 0) lifetime -= age
  return Math.min(max, Math.max(min, Math.floor(lifetime)))
}

function parseCacheControl (header: string | undefined): Map<string, string> {
  const directives = new Map<string, string>()
  if (header === undefined) return directives
  for (const part of header.split(',')) {
    const eq = part.indexOf('=')
    const name = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase()
    if (name === '' || directives.has(name)) continue
    directives.set(name, eq < 0 ? '' : part.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1'))
  }
  return directives
}
