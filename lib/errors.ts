import createError from '@fastify/error'
import { StoreUnavailableError } from './storage/contract.js'

/**
 * Configuration and programming errors: one row each. They are thrown at registration or by
 * a misused API, never turned into an OAuth response.
 */
export const errors = {
  INVALID_OPTION: createError('FST_MCP_OAUTH_INVALID_OPTION', 'Invalid fastify-mcp-oauth option %s: %s', 500, TypeError),
  INCONSISTENT_CONFIG: createError('FST_MCP_OAUTH_INCONSISTENT_CONFIG', 'Inconsistent fastify-mcp-oauth configuration: %s', 500),
  INVALID_GUARD: createError('FST_MCP_OAUTH_INVALID_GUARD', 'authenticate(): %s', 500, TypeError),
  STORE_CONTRACT: createError('FST_MCP_OAUTH_STORE_CONTRACT', 'Storage contract violated: %s', 500),
  PROVIDER: createError('FST_MCP_OAUTH_PROVIDER', 'Identity provider misconfigured: %s', 500),
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

  constructor (error: OAuthErrorCode, description: string, opts: OAuthErrorOptions = {}) {
    super(description, opts.cause === undefined ? undefined : { cause: opts.cause })
    this.name = 'OAuthError'
    this.error = error
    this.statusCode = opts.statusCode ?? defaultStatus[error]
    this.headers = opts.headers ?? {}
  }

  get description (): string {
    return this.message
  }

  toJSON (): { error: OAuthErrorCode, error_description: string } {
    return { error: this.error, error_description: this.message }
  }
}

export function isOAuthError (err: unknown): err is OAuthError {
  return err instanceof OAuthError
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
