import createError from '@fastify/error'

/**
 * Every error type of the library lives in this file, which imports nothing from lib/: any floor
 * may throw them.
 *
 * `errors`: configuration and programming errors, one row each (code, message, status, base
 * class), as in fastify core's lib/errors.js. They are thrown at registration, by a misused API or
 * inside the library, never turned into an OAuth response.
 */
export const errors = {
  INVALID_OPTION: createError('FST_MCP_OAUTH_INVALID_OPTION', 'Invalid fastify-mcp-oauth option %s: %s', 500, TypeError),
  INCONSISTENT_CONFIG: createError('FST_MCP_OAUTH_INCONSISTENT_CONFIG', 'Inconsistent fastify-mcp-oauth configuration: %s', 500),
  INVALID_GUARD: createError('FST_MCP_OAUTH_INVALID_GUARD', 'authenticate(): %s', 500, TypeError),
  // Providers: the options given to googleProvider(), oidcProvider(), githubProvider().
  PROVIDER_OPTION: createError('FST_MCP_OAUTH_PROVIDER_OPTION', '%s: %s', 500, TypeError),
  PROVIDER_URL: createError('FST_MCP_OAUTH_PROVIDER_URL', '%s is not a valid URL', 500, TypeError),
  PROVIDER_INSECURE_URL: createError('FST_MCP_OAUTH_PROVIDER_INSECURE_URL', '%s must use https (http is allowed only on loopback or with allowInsecureHttp)', 500, TypeError),
  /** The stand-in `cause` of an UpstreamError: the original's class and codes, none of its payload. */
  UPSTREAM_CAUSE: createError('FST_MCP_OAUTH_UPSTREAM_CAUSE', '%s', 500),
  // Encryption at rest (the key ring).
  ENCRYPTION_KEY: createError('FST_MCP_OAUTH_ENCRYPTION_KEY', 'key %s', 500),
  SEALED_VALUE: createError('FST_MCP_OAUTH_SEALED_VALUE', '%s', 500),
  // Telemetry.
  METRIC_EXISTS: createError('FST_MCP_OAUTH_METRIC_EXISTS', 'fastify-mcp-oauth: metric %s is already in metrics.registry (two plugin instances on one registry?)', 500),
  UNKNOWN_LABEL: createError('FST_MCP_OAUTH_UNKNOWN_LABEL', '%s: unknown label %s', 500),
  STORE_STATS_TIMEOUT: createError('FST_MCP_OAUTH_STORE_STATS_TIMEOUT', 'store.stats() timed out', 500),
  /** Recorded for an operation that failed without an error of its own. */
  OPERATION_FAILED: createError('FST_MCP_OAUTH_OPERATION_FAILED', 'failed', 500),
  // storage: a store misused by its caller, or built with bad options
  STORE_NO_GRANT: createError('FST_MCP_OAUTH_STORE_NO_GRANT', '%s: the grant does not exist', 500),
  STORE_FOREIGN_SUCCESSOR: createError('FST_MCP_OAUTH_STORE_FOREIGN_SUCCESSOR', 'rotateRefreshToken: the successor must stay in the family', 500),
  REDIS_STORE_OPTION: createError('FST_MCP_OAUTH_REDIS_STORE_OPTION', 'RedisStore: %s', 500, TypeError),
  // clients: the SSRF-safe fetch refused or failed (the message is the reason; the caller says what was fetched)
  FETCH_FAILED: createError('FST_MCP_OAUTH_FETCH_FAILED', '%s', 502)
} as const

/** The error codes of RFC 6749, RFC 6750, RFC 7591, RFC 8707 and RFC 7009 that this server answers with. */
export type OAuthErrorCode =
  | 'invalid_request'
  | 'invalid_client'
  | 'invalid_grant'
  | 'unauthorized_client'
  | 'unsupported_grant_type'
  | 'unsupported_response_type'
  | 'unsupported_token_type'
  | 'invalid_scope'
  | 'invalid_target'
  | 'access_denied'
  | 'server_error'
  | 'temporarily_unavailable'
  | 'invalid_token'
  | 'insufficient_scope'
  | 'invalid_redirect_uri'
  | 'invalid_client_metadata'
  | 'login_required'
  | 'consent_required'
  | 'slow_down'

const defaultStatus: Record<OAuthErrorCode, number> = {
  invalid_request: 400,
  invalid_client: 401,
  invalid_grant: 400,
  unauthorized_client: 400,
  unsupported_grant_type: 400,
  unsupported_response_type: 400,
  unsupported_token_type: 400,
  invalid_scope: 400,
  invalid_target: 400,
  access_denied: 403,
  server_error: 500,
  temporarily_unavailable: 503,
  invalid_token: 401,
  insufficient_scope: 403,
  invalid_redirect_uri: 400,
  invalid_client_metadata: 400,
  login_required: 400,
  consent_required: 400,
  slow_down: 429
}

export interface OAuthErrorOptions {
  statusCode?: number
  headers?: Record<string, string>
  cause?: unknown
  /** The client's redirect URI carrying this error as the authorization response (see `redirect`). */
  redirect?: string
}

/**
 * An error that the protocol defines. Routes turn it into
 * `{ error, error_description }` with its status and `Cache-Control: no-store`.
 * The description is for developers; it never holds a secret.
 */
export class OAuthError extends Error {
  readonly error: OAuthErrorCode
  readonly statusCode: number
  readonly headers: Record<string, string>
  /**
   * Set when the error may go back to the client: the redirect URI with `error`,
   * `error_description`, `state` and `iss`. Errors about the client or its redirect URI have none:
   * they are shown to the user, never redirected (RFC 6749 §4.1.2.1).
   */
  readonly redirect?: string

  constructor (error: OAuthErrorCode, description: string, opts: OAuthErrorOptions = {}) {
    super(description, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = 'OAuthError'
    this.error = error
    this.statusCode = opts.statusCode ?? defaultStatus[error]
    this.headers = opts.headers ?? {}
    if (opts.redirect !== undefined) this.redirect = opts.redirect
  }

  get description (): string {
    return this.message
  }

  get redirectable (): boolean {
    return this.redirect !== undefined
  }

  toJSON (): { error: OAuthErrorCode, error_description: string } {
    return { error: this.error, error_description: this.message }
  }
}

export function isOAuthError (err: unknown): err is OAuthError {
  return err instanceof OAuthError
}

/**
 * Thrown by a store whose backend is unreachable, slow or failing. Endpoints answer it with
 * 503 temporarily_unavailable (never invalid_grant: a client would throw its tokens away).
 */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError'
}

/**
 * The RedisStore's failures: every operation that reached for Redis and failed, the store's own
 * (timeouts, closed store) and the client's or the server's (a command timeout, a lost connection,
 * an error reply), the latter as `cause`. A StoreUnavailableError, so endpoints answer 503, never 500.
 */
export class RedisStoreError extends StoreUnavailableError {
  override name = 'RedisStoreError'
}

/**
 * Thrown by saveGrant / saveGrantWithTokens for a grant id revoked before it was written: the code
 * that carries it was replayed while its first exchange was still running (see consumeCode).
 */
export class GrantRevokedError extends Error {
  override name = 'GrantRevokedError'
}

export type UpstreamErrorKind =
  /** The user or the provider refused (access_denied, login_required, ...). */
  | 'access_denied'
  /** The upstream grant is dead (invalid_grant): our grant must go too. */
  | 'invalid_grant'
  /** Timeout, network failure, 429 or 5xx: retry later, keep everything. */
  | 'temporary'
  /** The answer broke the protocol (bad ID token, wrong issuer, nonce mismatch, ...). */
  | 'invalid_response'
  /** The user is not allowed by policy (hosted domain, organisation, unverified e-mail). */
  | 'not_allowed'
  /** The provider now names another user (a refreshed ID token with another subject): our grant must go. */
  | 'identity_changed'

/**
 * What every provider throws. The message is safe to show and log: never a token, code or secret,
 * never the provider's raw response body.
 */
export class UpstreamError extends Error {
  readonly kind: UpstreamErrorKind
  readonly provider: string

  constructor (provider: string, kind: UpstreamErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'UpstreamError'
    this.kind = kind
    this.provider = provider
  }
}

/** Why getUpstreamToken() could not deliver: `retryable` false means the user must log in again. */
export class UpstreamTokenError extends Error {
  readonly retryable: boolean
  /** When retryable: seconds before a retry can succeed, where known. */
  readonly retryAfter?: number
  constructor (message: string, retryable: boolean, options?: { cause?: unknown, retryAfter?: number }) {
    super(message, options)
    this.name = 'UpstreamTokenError'
    this.retryable = retryable
    if (options?.retryAfter !== undefined) this.retryAfter = options.retryAfter
  }
}

interface ReplyLike {
  code (statusCode: number): ReplyLike
  header (name: string, value: string): ReplyLike
  send (payload?: unknown): unknown
}
interface RequestLike {
  log: { error (obj: unknown, msg?: string): void, warn (obj: unknown, msg?: string): void }
}

/** The one mapping from an OAuth error to an HTTP reply. */
export function sendOAuthError (reply: ReplyLike, err: OAuthError): unknown {
  reply.code(err.statusCode).header('cache-control', 'no-store').header('pragma', 'no-cache')
  for (const [name, value] of Object.entries(err.headers)) reply.header(name, value)
  return reply.send(err.toJSON())
}

/** Turn whatever an OAuth route threw into an OAuth error (RFC 6749 §5.2 shape). */
export function toOAuthError (err: unknown): OAuthError {
  if (isOAuthError(err)) return err
  const e = err as { validation?: unknown, validationContext?: string, statusCode?: number, code?: string, message?: string }
  if (e?.validation !== undefined) {
    return new OAuthError('invalid_request', `Invalid request: ${String(e.message ?? 'validation failed')}`)
  }
  if (err instanceof StoreUnavailableError) {
    return new OAuthError('temporarily_unavailable', 'Storage is unavailable; retry shortly', { headers: { 'retry-after': '1' }, cause: err })
  }
  const status = typeof e?.statusCode === 'number' ? e.statusCode : 500
  if (status >= 400 && status < 500) {
    // Fastify's own 4xx (bad JSON, wrong media type, body too large, ...): the request is at fault.
    const described = clientErrorDescriptions[e.code ?? ''] ?? 'The request could not be parsed'
    return new OAuthError(status === 429 ? 'slow_down' : 'invalid_request', described, { statusCode: status })
  }
  return new OAuthError('server_error', 'The server could not complete the request', { cause: err })
}

const clientErrorDescriptions: Record<string, string> = {
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'Unsupported content type for this endpoint',
  FST_ERR_CTP_BODY_TOO_LARGE: 'Request body too large',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'Empty JSON body',
  FST_ERR_CTP_INVALID_JSON_BODY: 'Malformed JSON body',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'Content-Length does not match the body',
  FST_ERR_CTP_INVALID_TYPE: 'Invalid content type header',
  FST_ERR_BAD_URL: 'Malformed URL'
}

/** Error handler installed on every OAuth route context. */
export function oauthErrorHandler (err: unknown, request: RequestLike, reply: ReplyLike): unknown {
  const oauth = toOAuthError(err)
  logOAuthError(request, err, oauth)
  return sendOAuthError(reply, oauth)
}

/** Server-side failures are logged (a 503 without its stack: the dependency said it all); client errors are not. */
export function logOAuthError (request: RequestLike, err: unknown, oauth: OAuthError): void {
  if (oauth.statusCode >= 500 && oauth.statusCode !== 503) request.log.error({ err }, 'OAuth endpoint failed')
  else if (oauth.statusCode === 503) request.log.warn({ err: { name: (err as Error).name, message: (err as Error).message } }, 'OAuth endpoint: dependency unavailable')
}
