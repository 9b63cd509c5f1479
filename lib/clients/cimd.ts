import { lookup as dnsLookup } from 'node:dns/promises'
import type { IncomingHttpHeaders } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { isIP, type LookupFunction } from 'node:net'
import { OAuthError } from '../errors.js'
import { checkRedirectUri, isForbiddenAddress, isPrivateHost, type RedirectPolicy } from '../oauth/redirect.js'
import { registeredScope } from '../oauth/scopes.js'
export { isForbiddenAddress } from '../oauth/redirect.js'
import type { ClientRecord } from '../storage/contract.js'
import { hasUnsafeDisplayChars } from '../oauth/display.js'

/**
 * Client ID Metadata Documents (MCP authorization 2025-11-25, draft-ietf-oauth-client-id-metadata-document):
 * a `client_id` that is an https URL names a JSON document of client metadata served at that URL.
 *
 * Fetching a URL that a stranger chose is a server-side request forgery hazard, so the fetch is
 * deliberately narrow: https only, DNS resolved once by this module with every address checked, the
 * connection pinned to a checked address (no second resolution, so no DNS rebinding), no redirects,
 * one total deadline, a byte cap enforced while streaming, and strict validation of the document.
 *
 * Decisions:
 * - A query string is allowed (the draft says MAY); it is part of the identifier and of the request.
 * - The URL must be in the canonical form a WHATWG URL parser writes (lower-case host, no default
 *   port, ...): the identifier is compared as a plain string, so one document has one identifier.
 * - Content-Type must be `application/json` (a `charset` parameter, if any, must be UTF-8); other
 *   `+json` types are refused, since none of them means "client metadata".
 * - Cache lifetime: `max-age` (minus `Age`), else `Expires` - `Date`, else `minCacheSeconds`; always
 *   clamped to [minCacheSeconds, maxCacheSeconds]. `no-store` and `no-cache` mean `minCacheSeconds`:
 *   the floor exists so that authorization requests cannot make this server fetch on every call.
 *   The cache holds at most `maxCacheEntries` documents (least recently used go first).
 * - Failures are remembered for `failureCacheSeconds` (30 s): a client id that fails is not fetched
 *   again on every request naming it. At most `maxCacheEntries` failures are kept (oldest go first).
 * - At most `maxConcurrentFetches` documents are fetched at once (16). A request that would start
 *   another is refused at once with 503 temporarily_unavailable and Retry-After, not queued: requests
 *   naming many distinct URLs cannot make this server open unbounded outbound connections, and nobody
 *   waits behind them. Not invalid_client: the client is not at fault and should come back.
 */

export interface ResolvedAddress {
  address: string
  family: 4 | 6
}

export interface CimdResolverOptions {
  /** Total deadline for DNS, connect, TLS, headers and body. Default 5000 ms. */
  timeoutMs?: number
  /** Largest accepted document. Default 5120 bytes. */
  maxBytes?: number
  /** Shortest time a fetched document is reused. Default 60 s. */
  minCacheSeconds?: number
  /** Longest time a fetched document is reused. Default 86400 s. */
  maxCacheSeconds?: number
  /** Most documents kept in memory, and most failures remembered. Default 1000. */
  maxCacheEntries?: number
  /** How long a failed fetch is remembered (answered without fetching again); 0 = not at all. Default 30 s. */
  failureCacheSeconds?: number
  /** Most fetches in flight at once; one more is refused at once (503). Default 16. */
  maxConcurrentFetches?: number
  /**
   * TEST ONLY: allow hosts that are (or resolve to) loopback, private, link-local or other
   * special-use addresses. Never enable this in production: it turns the fetcher into an SSRF tool.
   */
  allowPrivateAddresses?: boolean
  /** The policy every redirect URI in a document must pass. */
  redirectPolicy: RedirectPolicy
  /** The scopes this server grants: a document's `scope` keeps only these (as a registration's). */
  scopes?: readonly string[]
  /** Clock in epoch milliseconds. */
  now?: () => number
  /** Name resolution, called once per fetch. Default: `dns.promises.lookup` with `all: true`. */
  lookup?: (hostname: string) => Promise<ResolvedAddress[]>
  /**
   * TEST ONLY: trusted CA certificate(s) for the TLS connection, replacing the system roots (for a
   * test server with a self-signed certificate).
   */
  ca?: string | Buffer | Array<string | Buffer>
  /** Called once per document fetched and accepted (not for answers from the cache). */
  onFetched?: (clientId: string) => void
}

interface CacheEntry {
  record: ClientRecord
  expiresAt: number
}

interface FailureEntry {
  error: OAuthError
  until: number
}

interface Fetched {
  body: Buffer
  headers: IncomingHttpHeaders
}

const MAX_URL_LENGTH = 2000
const SHARED_SECRET_METHODS = new Set(['client_secret_basic', 'client_secret_post', 'client_secret_jwt'])
const ALLOWED_GRANT_TYPES = new Set(['authorization_code', 'refresh_token'])
const URI_FIELDS = ['client_uri', 'logo_uri', 'tos_uri', 'policy_uri'] as const
const STRING_FIELDS = ['software_id', 'software_version'] as const

function fail (reason: string, cause?: unknown): OAuthError {
  return new OAuthError('invalid_client', `Client ID metadata document: ${reason}`, cause === undefined ? {} : { cause })
}

export class CimdResolver {
  readonly #timeoutMs: number
  readonly #maxBytes: number
  readonly #minCacheSeconds: number
  readonly #maxCacheSeconds: number
  readonly #maxCacheEntries: number
  readonly #failureCacheMs: number
  readonly #maxConcurrent: number
  readonly #allowPrivate: boolean
  readonly #redirectPolicy: RedirectPolicy
  readonly #scopes: readonly string[] | undefined
  readonly #now: () => number
  readonly #lookup: (hostname: string) => Promise<ResolvedAddress[]>
  readonly #ca: CimdResolverOptions['ca']
  readonly #onFetched: ((clientId: string) => void) | undefined
  readonly #cache = new Map<string, CacheEntry>()
  readonly #failures = new Map<string, FailureEntry>()
  readonly #inflight = new Map<string, Promise<ClientRecord>>()
  readonly #controllers = new Set<AbortController>()
  #closed = false

  constructor (opts: CimdResolverOptions) {
    this.#timeoutMs = positive(opts.timeoutMs, 5000, 'timeoutMs')
    this.#maxBytes = positive(opts.maxBytes, 5120, 'maxBytes')
    this.#minCacheSeconds = nonNegative(opts.minCacheSeconds, 60, 'minCacheSeconds')
    this.#maxCacheSeconds = nonNegative(opts.maxCacheSeconds, 86400, 'maxCacheSeconds')
    if (this.#maxCacheSeconds < this.#minCacheSeconds) throw new RangeError('CimdResolver: maxCacheSeconds must not be below minCacheSeconds')
    this.#maxCacheEntries = positive(opts.maxCacheEntries, 1000, 'maxCacheEntries')
    this.#failureCacheMs = nonNegative(opts.failureCacheSeconds, 30, 'failureCacheSeconds') * 1000
    this.#maxConcurrent = positive(opts.maxConcurrentFetches, 16, 'maxConcurrentFetches')
    this.#allowPrivate = opts.allowPrivateAddresses === true
    this.#redirectPolicy = opts.redirectPolicy
    this.#scopes = opts.scopes
    this.#now = opts.now ?? Date.now
    this.#lookup = opts.lookup ?? defaultLookup
    this.#ca = opts.ca
    this.#onFetched = opts.onFetched
  }

  /** Does this client id name a metadata document (an https URL with a path)? */
  static isCimdClientId (clientId: string): boolean {
    if (typeof clientId !== 'string' || !/^https:\/\//i.test(clientId)) return false
    try {
      const url = new URL(clientId)
      return url.protocol === 'https:' && url.pathname !== '/' && url.pathname !== ''
    } catch {
      return false
    }
  }

  /** Fetch (or reuse) and validate the document; throws `invalid_client` for anything wrong. */
  async resolve (clientId: string): Promise<ClientRecord> {
    if (this.#closed) throw fail('the resolver is closed')
    const url = parseClientIdUrl(clientId)
    const cached = this.#cache.get(clientId)
    if (cached !== undefined) {
      this.#cache.delete(clientId)
      if (cached.expiresAt > this.#now()) {
        this.#cache.set(clientId, cached) // most recently used goes last
        return structuredClone(cached.record)
      }
    }
    const failed = this.#failures.get(clientId)
    if (failed !== undefined) {
      if (failed.until > this.#now()) throw new OAuthError(failed.error.error, failed.error.message)
      this.#failures.delete(clientId)
    }
    let pending = this.#inflight.get(clientId)
    if (pending === undefined) {
      // One fetch per document in flight, so the map's size is the number of outbound fetches.
      if (this.#inflight.size >= this.#maxConcurrent) throw this.#busy()
      pending = this.#load(clientId, url).finally(() => this.#inflight.delete(clientId))
      this.#inflight.set(clientId, pending)
    }
    return structuredClone(await pending)
  }

  /** Forget every cached document and abort every fetch in flight; later calls fail. */
  close (): void {
    this.#closed = true
    this.#cache.clear()
    this.#failures.clear()
    for (const controller of this.#controllers) controller.abort(fail('the resolver was closed'))
    this.#controllers.clear()
  }

  async #load (clientId: string, url: URL): Promise<ClientRecord> {
    const controller = new AbortController()
    this.#controllers.add(controller)
    const timer = setTimeout(() => controller.abort(fail(`no complete answer within ${this.#timeoutMs} ms`)), this.#timeoutMs)
    try {
      const addresses = await this.#addresses(url, controller.signal)
      const fetched = await this.#fetch(url, addresses, controller.signal)
      if (this.#closed) throw fail('the resolver was closed')
      const now = this.#now()
      const record = buildRecord(clientId, parseDocument(fetched.body), this.#redirectPolicy, now, this.#scopes)
      this.#remember(clientId, record, now + this.#ttlSeconds(fetched.headers) * 1000)
      this.#onFetched?.(clientId)
      return record
    } catch (err) {
      const failure = err instanceof OAuthError ? err : netFailure('the document could not be fetched', err)
      if (!this.#closed) this.#rememberFailure(clientId, failure)
      throw failure
    } finally {
      clearTimeout(timer)
      this.#controllers.delete(controller)
    }
  }

  #remember (clientId: string, record: ClientRecord, expiresAt: number): void {
    this.#cache.delete(clientId)
    for (const oldest of this.#cache.keys()) {
      if (this.#cache.size < this.#maxCacheEntries) break
      this.#cache.delete(oldest)
    }
    this.#cache.set(clientId, { record, expiresAt })
  }

  #rememberFailure (clientId: string, error: OAuthError): void {
    if (this.#failureCacheMs === 0) return
    this.#failures.delete(clientId)
    for (const oldest of this.#failures.keys()) {
      if (this.#failures.size < this.#maxCacheEntries) break
      this.#failures.delete(oldest)
    }
    this.#failures.set(clientId, { error, until: this.#now() + this.#failureCacheMs })
  }

  /** Over the cap: a slot frees as soon as a fetch ends (within the deadline); come back in a few seconds. */
  #busy (): OAuthError {
    const retryAfter = Math.ceil(Math.min(this.#timeoutMs, 5000) / 1000)
    return new OAuthError('temporarily_unavailable',
      `Client ID metadata document: it could not be fetched right now (too many documents are being fetched); retry in ${retryAfter} s`,
      { headers: { 'retry-after': String(retryAfter) } })
  }

  /** Resolve the host once and check every address; the fetch connects only to these. */
  async #addresses (url: URL, signal: AbortSignal): Promise<ResolvedAddress[]> {
    const host = bareHost(url.hostname)
    const literal = isIP(host)
    let addresses: ResolvedAddress[]
    if (literal !== 0) {
      addresses = [{ address: host, family: literal === 6 ? 6 : 4 }]
    } else {
      if (!this.#allowPrivate && isPrivateHost(host)) throw fail('the host name is local or special-use')
      let found: ResolvedAddress[]
      try {
        found = await abortable(this.#lookup(host), signal)
      } catch (err) {
        if (signal.aborted) throw signal.reason
        throw netFailure('the host name could not be resolved', err)
      }
      if (!Array.isArray(found) || found.length === 0) throw fail('the host name has no address')
      addresses = found.map(a => {
        const family = isIP(a?.address ?? '')
        if (family === 0) throw fail('the host name resolved to something that is not an IP address')
        return { address: a.address, family: family === 6 ? 6 : 4 }
      })
    }
    if (!this.#allowPrivate && addresses.some(a => isForbiddenAddress(a.address))) {
      throw fail('the host resolves to a private, loopback, link-local or special-use address')
    }
    return addresses
  }

  #fetch (url: URL, addresses: ResolvedAddress[], signal: AbortSignal): Promise<Fetched> {
    const maxBytes = this.#maxBytes
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
      const done = (err: OAuthError | null, value?: Fetched): void => {
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
      const onAbort = (): void => done(signal.reason as OAuthError)
      const req = httpsRequest({
        protocol: 'https:',
        hostname: host,
        port: url.port === '' ? 443 : Number(url.port),
        path: url.pathname + url.search,
        method: 'GET',
        headers: { accept: 'application/json', 'user-agent': 'fastify-mcp-oauth (client metadata fetcher)' },
        agent: false,
        lookup: pinned,
        ...(isIP(host) === 0 ? { servername: host } : {}),
        ...(this.#ca === undefined ? {} : { ca: this.#ca }),
        minVersion: 'TLSv1.2',
        rejectUnauthorized: true,
        maxHeaderSize: 16384
      })
      signal.addEventListener('abort', onAbort, { once: true })
      req.on('error', err => done(netFailure('the document could not be fetched', err)))
      req.on('response', res => {
        res.on('error', err => done(netFailure('the connection failed while reading the document', err)))
        const status = res.statusCode ?? 0
        if (status >= 300 && status < 400) {
          done(fail(`the server answered with a redirect (HTTP ${status}); redirects are not followed`))
          return
        }
        if (status !== 200) {
          done(fail(`the server answered HTTP ${status}; 200 is required`))
          return
        }
        const typeProblem = contentTypeProblem(res.headers['content-type'])
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

  /** How long to reuse a document, from its caching headers, clamped to the configured range. */
  #ttlSeconds (headers: IncomingHttpHeaders): number {
    const directives = parseCacheControl(headers['cache-control'])
    let lifetime: number | undefined
    if (directives.has('no-store') || directives.has('no-cache')) {
      lifetime = this.#minCacheSeconds
    } else if (directives.has('max-age')) {
      const value = directives.get('max-age') ?? ''
      lifetime = /^\d+$/.test(value) ? Number(value) : 0 // an invalid max-age means stale
    } else if (headers.expires !== undefined) {
      const expires = Date.parse(headers.expires)
      const date = headers.date === undefined ? NaN : Date.parse(headers.date)
      lifetime = Number.isNaN(expires) || Number.isNaN(date) ? 0 : (expires - date) / 1000
    }
    if (lifetime === undefined) lifetime = this.#minCacheSeconds
    const age = Number(headers.age)
    if (Number.isFinite(age) && age > 0) lifetime -= age
    return Math.min(this.#maxCacheSeconds, Math.max(this.#minCacheSeconds, Math.floor(lifetime)))
  }
}

function positive (value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`CimdResolver: ${name} must be a positive number`)
  return value
}

function nonNegative (value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`CimdResolver: ${name} must be a non-negative number`)
  return value
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

/** A network error reduced to message and code: parser errors carry the raw bytes received. */
function netFailure (reason: string, err: unknown): OAuthError {
  const code = errorCode(err)
  const message = err instanceof Error ? err.message : String(err)
  return fail(`${reason} (${code})`, Object.assign(new Error(message), { code }))
}

function bareHost (hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname
}

/** The lexical rules for a client id URL; checked on the raw string, since parsing normalises. */
function parseClientIdUrl (clientId: string): URL {
  if (typeof clientId !== 'string' || clientId.length === 0) throw fail('client_id must be a URL')
  if (clientId.length > MAX_URL_LENGTH) throw fail(`the client_id URL is longer than ${MAX_URL_LENGTH} characters`)
  for (let i = 0; i < clientId.length; i++) {
    const c = clientId.charCodeAt(i)
    if (c <= 0x20 || c >= 0x7f || c === 0x5c) {
      throw fail('the client_id URL must not contain spaces, control characters, backslashes or non-ASCII characters')
    }
  }
  if (!/^https:\/\//i.test(clientId)) throw fail('the client_id URL must use https')
  if (clientId.includes('#')) throw fail('the client_id URL must not contain a fragment')
  const rest = clientId.slice('https://'.length)
  const authorityEnd = rest.search(/[/?]/)
  const authority = authorityEnd < 0 ? rest : rest.slice(0, authorityEnd)
  if (authority.includes('@')) throw fail('the client_id URL must not contain user information')
  const path = authorityEnd < 0 ? '' : (rest.slice(authorityEnd).split('?')[0] as string)
  if (path === '' || path === '/') throw fail('the client_id URL must have a path, such as https://example.com/client.json')
  if (path.split('/').some(segment => /^(?:\.|%2e){1,2}$/i.test(segment))) {
    throw fail('the client_id URL must not contain "." or ".." path segments')
  }
  let url: URL
  try {
    url = new URL(clientId)
  } catch {
    throw fail('the client_id is not a valid URL')
  }
  if (url.href !== clientId) {
    throw fail('the client_id URL must be in canonical form (lower-case host, no default port, normalised percent-encoding)')
  }
  return url
}

function contentTypeProblem (header: string | undefined): string | null {
  if (header === undefined) return 'the response has no Content-Type; application/json is required'
  const [type, ...params] = header.split(';')
  if ((type as string).trim().toLowerCase() !== 'application/json') return 'the Content-Type must be application/json'
  for (const param of params) {
    const eq = param.indexOf('=')
    const name = (eq < 0 ? param : param.slice(0, eq)).trim().toLowerCase()
    const value = eq < 0 ? '' : param.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1').toLowerCase()
    if (name === 'charset' && value !== 'utf-8' && value !== 'utf8') return 'the document must be encoded in UTF-8'
  }
  return null
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

function parseDocument (body: Buffer): Record<string, unknown> {
  let text: string
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body)
  } catch {
    throw fail('the document is not valid UTF-8')
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    // The parser's message quotes the input; the description must not.
    throw fail('the document is not valid JSON')
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw fail('the document must be a JSON object')
  return value as Record<string, unknown>
}

function stringArray (value: unknown, field: string): string[] {
  if (!Array.isArray(value) || value.some(v => typeof v !== 'string')) throw fail(`${field} must be an array of strings`)
  return value as string[]
}

/** Validate a parsed document against the URL it came from and turn it into a public client. */
function buildRecord (clientId: string, doc: Record<string, unknown>, policy: RedirectPolicy, now: number, scopes?: readonly string[]): ClientRecord {
  const has = (field: string): boolean => Object.hasOwn(doc, field) && doc[field] !== undefined
  if (doc.client_id !== clientId) throw fail('client_id in the document does not equal the URL it was fetched from')
  if (has('client_secret') || has('client_secret_expires_at')) {
    throw fail('the document must not contain a client_secret: a public document cannot hold a secret')
  }
  const method = doc.token_endpoint_auth_method
  if (method !== undefined && method !== 'none') {
    if (typeof method === 'string' && SHARED_SECRET_METHODS.has(method)) {
      throw fail(`token_endpoint_auth_method "${method}" needs a shared secret, which a public document cannot hold; use "none"`)
    }
    if (method === 'private_key_jwt') throw fail('token_endpoint_auth_method "private_key_jwt" is not supported by this server; use "none"')
    throw fail('token_endpoint_auth_method must be "none"')
  }

  const clientName = typeof doc.client_name === 'string' ? doc.client_name.trim() : ''
  if (clientName === '') throw fail('client_name is required')
  if (clientName.length > 200 || hasUnsafeDisplayChars(clientName)) throw fail('client_name must be at most 200 characters, without control or text-direction characters')
  if (!has('redirect_uris')) throw fail('redirect_uris is required')
  const redirectUris = [...new Set(stringArray(doc.redirect_uris, 'redirect_uris'))]
  if (redirectUris.length === 0) throw fail('redirect_uris must not be empty')
  let native = true
  redirectUris.forEach((uri, i) => {
    const check = checkRedirectUri(uri, policy)
    if (!check.ok) throw fail(`redirect_uris[${i}] ${check.reason}`)
    if (check.kind !== 'loopback' && check.kind !== 'custom') native = false
  })

  if (has('grant_types')) {
    const grants = stringArray(doc.grant_types, 'grant_types')
    if (grants.some(g => !ALLOWED_GRANT_TYPES.has(g))) throw fail('grant_types may only contain authorization_code and refresh_token')
    if (!grants.includes('authorization_code')) throw fail('grant_types must include authorization_code')
  }
  if (has('response_types')) {
    const types = stringArray(doc.response_types, 'response_types')
    if (types.length === 0 || types.some(r => r !== 'code')) throw fail('response_types may only contain code')
  }
  if (has('scope') && typeof doc.scope !== 'string') throw fail('scope must be a string')

  const metadata: Record<string, unknown> = {}
  for (const field of URI_FIELDS) {
    if (!has(field)) continue
    const value = doc[field]
    if (typeof value !== 'string' || !isPlainHttpsUrl(value)) throw fail(`${field} must be an https URL`)
    metadata[field] = value
  }
  for (const field of STRING_FIELDS) {
    if (!has(field)) continue
    if (typeof doc[field] !== 'string') throw fail(`${field} must be a string`)
    metadata[field] = doc[field]
  }
  if (has('contacts')) metadata.contacts = stringArray(doc.contacts, 'contacts')

  const record: ClientRecord = {
    clientId,
    redirectUris,
    tokenEndpointAuthMethod: 'none',
    grantTypes: ['authorization_code', 'refresh_token'],
    responseTypes: ['code'],
    applicationType: native ? 'native' : 'web',
    clientName,
    metadata,
    clientIdIssuedAt: Math.floor(now / 1000),
    source: 'cimd'
  }
  if (typeof doc.scope === 'string') {
    const scope = scopes === undefined ? doc.scope : registeredScope(doc.scope, scopes)
    if (scope !== undefined) record.scope = scope
  }
  return record
}

function isPlainHttpsUrl (value: string): boolean {
  try {
    const url = new URL(value)
    return url.protocol === 'https:' && url.username === '' && url.password === '' && value.length <= MAX_URL_LENGTH
  } catch {
    return false
  }
}
