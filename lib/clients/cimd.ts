import { errors, OAuthError } from '../errors.js'
import type { RedirectPolicy } from '../oauth/redirect.js'
import { cacheSeconds, fetchFailure, SafeFetcher, type SafeFetchOptions } from '../security/fetch.js'
import type { ClientRecord } from '../storage/contract.js'
import { documentError as fail, validateClientMetadata } from './metadata.js'

/**
 * Client ID Metadata Documents (MCP authorization 2025-11-25, draft-ietf-oauth-client-id-metadata-document):
 * a `client_id` that is an https URL names a JSON document of client metadata served at that URL.
 *
 * Fetching a URL that a stranger chose is a server-side request forgery hazard: the fetch is the
 * narrow one of lib/security/fetch.ts (https only, every address checked, the connection pinned,
 * no redirects, one deadline, a byte cap), and the document passes the metadata rules as a document.
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

export interface CimdResolverOptions extends Pick<SafeFetchOptions, 'allowPrivateAddresses' | 'lookup' | 'ca'> {
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
  /** The policy every redirect URI in a document must pass. */
  redirectPolicy: RedirectPolicy
  /** The scopes this server grants: a document's `scope` keeps only these (as a registration's). */
  scopes?: readonly string[]
  /** Clock in epoch milliseconds. */
  now?: () => number
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

const MAX_URL_LENGTH = 2000

export class CimdResolver {
  readonly #timeoutMs: number
  readonly #minCacheSeconds: number
  readonly #maxCacheSeconds: number
  readonly #maxCacheEntries: number
  readonly #failureCacheMs: number
  readonly #maxConcurrent: number
  readonly #redirectPolicy: RedirectPolicy
  readonly #scopes: readonly string[] | undefined
  readonly #now: () => number
  readonly #fetcher: SafeFetcher
  readonly #onFetched: ((clientId: string) => void) | undefined
  readonly #cache = new Map<string, CacheEntry>()
  readonly #failures = new Map<string, FailureEntry>()
  readonly #inflight = new Map<string, Promise<ClientRecord>>()
  readonly #controllers = new Set<AbortController>()
  #closed = false

  constructor (opts: CimdResolverOptions) {
    this.#timeoutMs = positive(opts.timeoutMs, 5000, 'timeoutMs')
    const maxBytes = positive(opts.maxBytes, 5120, 'maxBytes')
    this.#minCacheSeconds = nonNegative(opts.minCacheSeconds, 60, 'minCacheSeconds')
    this.#maxCacheSeconds = nonNegative(opts.maxCacheSeconds, 86400, 'maxCacheSeconds')
    if (this.#maxCacheSeconds < this.#minCacheSeconds) throw new RangeError('CimdResolver: maxCacheSeconds must not be below minCacheSeconds')
    this.#maxCacheEntries = positive(opts.maxCacheEntries, 1000, 'maxCacheEntries')
    this.#failureCacheMs = nonNegative(opts.failureCacheSeconds, 30, 'failureCacheSeconds') * 1000
    this.#maxConcurrent = positive(opts.maxConcurrentFetches, 16, 'maxConcurrentFetches')
    this.#redirectPolicy = opts.redirectPolicy
    this.#scopes = opts.scopes
    this.#now = opts.now ?? Date.now
    this.#onFetched = opts.onFetched
    this.#fetcher = new SafeFetcher({
      timeoutMs: this.#timeoutMs,
      maxBytes,
      mediaType: 'application/json',
      userAgent: 'fastify-mcp-oauth (client metadata fetcher)',
      allowPrivateAddresses: opts.allowPrivateAddresses,
      lookup: opts.lookup,
      ca: opts.ca
    })
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
      // One fetch per document in flight, so the map's size is the number of outbound fetches. The
      // gate is here, not in the fetcher: a refusal for being busy is not the document's failure.
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
    try {
      const fetched = await this.#fetcher.get(url, controller.signal)
      if (this.#closed) throw fail('the resolver was closed')
      const now = this.#now()
      const meta = validateClientMetadata(parseDocument(fetched.body), { redirects: this.#redirectPolicy, scopes: this.#scopes, document: clientId })
      const record: ClientRecord = { clientId, ...meta, clientIdIssuedAt: Math.floor(now / 1000), source: 'cimd' }
      this.#remember(clientId, record, now + cacheSeconds(fetched.headers, this.#minCacheSeconds, this.#maxCacheSeconds) * 1000)
      this.#onFetched?.(clientId)
      return record
    } catch (err) {
      const failure = asDocumentError(err)
      if (!this.#closed) this.#rememberFailure(clientId, failure)
      throw failure
    } finally {
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

/** Whatever went wrong, as the document's refusal (a failed fetch keeps its network cause). */
function asDocumentError (err: unknown): OAuthError {
  if (err instanceof OAuthError) return err
  const failed = err instanceof errors.FETCH_FAILED ? err : fetchFailure('the document could not be fetched', err)
  return fail(failed.message, failed.cause)
}
