import { hashToken, looksLike } from '../oauth/tokens.js'
import type { AccessTokenRecord, TokenStore } from '../storage/contract.js'

/** What a valid access token says about the request. Users may augment it (declaration merging). */
export interface McpAuthInfo {
  /**
   * Who the token speaks for: 'user' (a person who logged in) or 'client' (a machine client, through
   * client credentials: no user, and `userId` is then the client id).
   */
  subjectType: 'user' | 'client'
  /** The user's id; for a `client` subject, the client id. */
  userId: string
  /** The user's e-mail address, only ever one the identity provider verified. */
  email?: string
  /** True when `email` is present (a verified address); false when there is none to rely on. */
  emailVerified: boolean
  clientId: string
  scopes: string[]
  /** The resource (audience) the token was issued for. */
  resource: string
  /** Epoch seconds. */
  expiresAt: number
  grantId: string
}

export type ValidationResult =
  | { valid: true, auth: McpAuthInfo }
  | { valid: false, reason: 'malformed' | 'unknown' | 'wrong_audience', description: string }

/**
 * Local validation of opaque access tokens: shape check, SHA-256, one store lookup, audience.
 * No call to the upstream provider on this path.
 */
export class TokenValidator {
  readonly #store: TokenStore
  readonly #now: () => number
  readonly #skewMs: number

  /** `skewMs`: an access token stays valid that long past its expiry (replicas' clocks differ). */
  constructor (store: TokenStore, now: () => number, skewMs = 0) {
    this.#store = store
    this.#now = now
    this.#skewMs = skewMs
  }

  async validate (token: string, resource?: string): Promise<ValidationResult> {
    if (!looksLike('accessToken', token)) return MALFORMED
    const hash = hashToken(token)
    const now = this.#now() - this.#skewMs
    const known = this.#store.getAccessTokenNow?.(hash, now)
    return result(known !== undefined ? known : await this.#store.getAccessToken(hash, now), resource)
  }

  /**
   * The same, answered synchronously when the store can (`getAccessTokenNow`); undefined when it
   * cannot, and then `lookup` (or `validate`) is the way.
   */
  validateNow (token: string, resource?: string): ValidationResult | undefined {
    if (!looksLike('accessToken', token)) return MALFORMED
    return this.validateShapedNow(token, resource)
  }

  /** `validateNow` for a token whose shape the caller has checked (`looksLike('accessToken', token)`). */
  validateShapedNow (token: string, resource?: string): ValidationResult | undefined {
    const store = this.#store
    if (store.getAccessTokenNow === undefined) return undefined
    const known = store.getAccessTokenNow(hashToken(token), this.#now() - this.#skewMs)
    return known === undefined ? undefined : result(known, resource)
  }

  /** The store's answer through I/O, for a token `validateNow` could not answer (it checked the shape). */
  async lookup (token: string, resource?: string): Promise<ValidationResult> {
    return result(await this.#store.getAccessToken(hashToken(token), this.#now() - this.#skewMs), resource)
  }
}

const MALFORMED: ValidationResult = Object.freeze({ valid: false, reason: 'malformed', description: 'The access token is not one this server issued' })
const UNKNOWN: ValidationResult = Object.freeze({ valid: false, reason: 'unknown', description: 'The access token is unknown, expired or revoked' })
const WRONG_AUDIENCE: ValidationResult = Object.freeze({ valid: false, reason: 'wrong_audience', description: 'The access token was issued for another resource' })

function result (record: AccessTokenRecord | null, resource: string | undefined): ValidationResult {
  if (record === null) return UNKNOWN
  if (resource !== undefined && record.resource !== resource) return WRONG_AUDIENCE
  const auth: McpAuthInfo = {
    subjectType: record.subjectType ?? 'user',
    userId: record.userId,
    clientId: record.clientId,
    scopes: record.scopes,
    resource: record.resource,
    expiresAt: Math.floor(record.expiresAt / 1000),
    grantId: record.grantId,
    emailVerified: record.email !== undefined
  }
  if (record.email !== undefined) auth.email = record.email
  return { valid: true, auth }
}
