import { createHmac, randomBytes } from 'node:crypto'

/** Every security-relevant event, with the fields each one carries. Never a secret. */
export interface AuditEvents {
  authorization_started: { clientId: string }
  callback_processed: { clientId: string, outcome: 'success' | 'error' }
  /** `subjectType` 'client': a machine subject (client credentials), whose userId is the client id. */
  token_issued: { clientId: string, userId: string, grantId: string, grantType: 'authorization_code' | 'refresh_token' | 'client_credentials' | 'urn:ietf:params:oauth:grant-type:jwt-bearer', subjectType?: 'client' }
  token_refreshed: { clientId: string, userId: string, grantId: string }
  token_revoked: { clientId: string, grantId?: string, tokenType: 'access_token' | 'refresh_token' }
  code_reuse: { clientId: string, grantId: string }
  refresh_reuse: { clientId: string, grantId: string }
  pkce_failure: { clientId: string }
  client_registered: { clientId: string, source: 'dcr' | 'static' | 'cimd' }
  client_deleted: { clientId: string }
  invalid_redirect: { clientId: string }
  consent_approved: { clientId: string }
  consent_denied: { clientId: string }
  login_succeeded: { clientId: string, userId: string, provider: string }
  upstream_failure: { provider: string, kind: string, step: 'authorize' | 'callback' | 'refresh' | 'revoke' }
  /** The identity provider no longer accepts the user (disabled, out of the domain, refused by policy): the grant was revoked. */
  upstream_access_lost: { provider: string, reason: string, clientId: string, userId: string, grantId: string }
  browser_mismatch: { clientId: string }
  rate_limited: { route: string }
  config_weakened: { setting: string }
}

export type AuditEventName = keyof AuditEvents
export type AuditSink = <E extends AuditEventName>(event: E, fields: AuditEvents[E]) => void

/** Routine events that the default sink logs at debug, not info (one per request would be noise). */
const DEBUG: ReadonlySet<AuditEventName> = new Set<AuditEventName>(['authorization_started', 'callback_processed'])

const WARN: ReadonlySet<AuditEventName> = new Set<AuditEventName>([
  'code_reuse', 'refresh_reuse', 'pkce_failure', 'invalid_redirect', 'upstream_failure', 'browser_mismatch', 'rate_limited', 'config_weakened',
  'upstream_access_lost'
])

interface Logger {
  debug (obj: object, msg?: string): void
  info (obj: object, msg?: string): void
  warn (obj: object, msg?: string): void
  isLevelEnabled? (level: string): boolean
}

/**
 * User ids are personal data: logs and spans get a short pseudonym instead, an HMAC keyed with a
 * deployment secret. Unkeyed, a small id space (numeric GitHub ids, e-mail addresses of one domain)
 * could be hashed exhaustively and the pseudonyms reversed; keyed, the same deployment gives stable
 * pseudonyms and another deployment different ones.
 */
export function hashUserId (userId: string, key: Buffer | string): string {
  return createHmac('sha256', key).update(userId).digest('base64url').slice(0, 16)
}

/**
 * The audit stream. The default sink writes one pino line per event (`event` field stable, user ids
 * hashed); a custom sink receives the same events unhashed, to store as it sees fit.
 */
export class Auditor {
  readonly #sink: AuditSink
  readonly #listeners: AuditSink[] = []
  readonly #pseudonymKey: Buffer

  /** `pseudonymKey` keys user pseudonyms (the plugin derives it from `secret`); random when absent. */
  constructor (logger: Logger, sink?: AuditSink, pseudonymKey?: Buffer) {
    this.#pseudonymKey = pseudonymKey ?? randomBytes(32)
    this.#sink = sink ?? ((event, fields) => {
      const level = WARN.has(event) ? 'warn' : DEBUG.has(event) ? 'debug' : 'info'
      // Build nothing (no copy, no hash) for a line the logger would drop, or hand to a method that
      // does nothing (Fastify's logger when `logger: false`).
      if (logger.isLevelEnabled?.(level) === false || doesNothing(logger[level])) return
      const line: Record<string, unknown> = { event, ...fields }
      if ('userId' in line && typeof line.userId === 'string') line.userId = this.pseudonym(line.userId)
      const msg = event === 'config_weakened' ? String((fields as { setting: string }).setting) : `audit: ${event}`
      logger[level](line, msg)
    })
  }

  /** The pseudonym logs and spans show for a user id (stable within one deployment). */
  pseudonym = (userId: string): string => hashUserId(userId, this.#pseudonymKey)

  /** Another consumer of the same events (metrics, for one). Listeners get the raw fields. */
  subscribe (listener: AuditSink): void {
    this.#listeners.push(listener)
  }

  emit<E extends AuditEventName> (event: E, fields: AuditEvents[E]): void {
    this.#deliver(this.#sink, event, fields)
    for (const fn of this.#listeners) this.#deliver(fn, event, fields)
  }

  #deliver<E extends AuditEventName> (fn: AuditSink, event: E, fields: AuditEvents[E]): void {
    try {
      fn(event, fields)
    } catch {
      // An audit sink must never break the request that emitted the event.
    }
  }
}

/** Functions known to have an empty body (checked once each). */
const empty = new WeakMap<(...args: never[]) => unknown, boolean>()

/** True only for a function whose source is provably empty, like `function noop () {}`: calling it has no effect. */
function doesNothing (fn: (...args: never[]) => unknown): boolean {
  let known = empty.get(fn)
  if (known === undefined) {
    known = /^function\s*[\w$]*\s*\(\s*\)\s*\{\s*\}$/.test(Function.prototype.toString.call(fn))
    empty.set(fn, known)
  }
  return known
}
