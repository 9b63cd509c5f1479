import { hashToken, looksLike } from './tokens.js'
import type { TokenStore } from '../storage/types.js'

/** What a valid access token says about the request. Users may augment it (declaration merging). */
export interface McpAuthInfo {
  userId: string
  email?: string
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
    if (!looksLike('accessToken', token)) {
      return { valid: false, reason: 'malformed', description: 'The access token is not one this server issued' }
    }
    const record = await this.#store.getAccessToken(hashToken(token), this.#now() - this.#skewMs)
    if (record === null) {
      return { valid: false, reason: 'unknown', description: 'The access token is unknown, expired or revoked' }
    }
    if (resource !== undefined && record.resource !== resource) {
      return { valid: false, reason: 'wrong_audience', description: 'The access token was issued for another resource' }
    }
    const auth: McpAuthInfo = {
      userId: record.userId,
      clientId: record.clientId,
      scopes: record.scopes,
      resource: record.resource,
      expiresAt: Math.floor(record.expiresAt / 1000),
      grantId: record.grantId
    }
    if (record.email !== undefined) auth.email = record.email
    return { valid: true, auth }
  }
}
