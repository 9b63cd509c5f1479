import { hash } from 'node:crypto'
import { OAuthError } from '../errors.js'
import type { ResolvedConfig } from '../options.js'
import type { Auditor } from '../security/audit.js'
import type { AccessTokenRecord, ClientRecord, RefreshTokenRecord, RotateResult, Store } from '../storage/types.js'
import { secondsUntil, type TokenResponse } from './grants.js'
import { matchResource } from './resource.js'
import { narrowScopes, withinClient } from './scopes.js'
import { generateId, hashToken, looksLike, TOKEN_PREFIX } from './tokens.js'

export interface RefreshDeps {
  config: ResolvedConfig
  store: Store
  auditor: Auditor
  now: () => number
  /** Family revocation, including the upstream grant. */
  revokeGrant: (grantId: string) => Promise<boolean>
}

/** FixedInfo of the derivation: what the key is for (a new label for a new derivation). */
const SUCCESSOR_LABEL = 'mcp-oauth refresh successor v2\0'
/** The one-step KDF's 32-bit big-endian counter, for its single block. */
const COUNTER_1 = '\0\0\0\x01'

/**
 * The successor pair of a rotation is derived, not drawn: the one-step key derivation of NIST SP
 * 800-56C (rev. 2, §4.1, option 1: SHA-512 over counter || secret || FixedInfo) with the old
 * refresh token as the secret and a label plus a fresh random salt as FixedInfo gives 64 bytes,
 * the first half the access token, the second the refresh token (256 bits each). The store keeps
 * only the salt (and the granted scope) with the rotated record, in `successor`, so that within
 * the grace window a caller presenting the old token gets the same pair again. Neither the old
 * token alone (the salt is server-side) nor the store alone (it has the old token's hash, not the
 * token) can compute the pair. One SHA-512 call costs about a third of an HMAC.
 */
function deriveSuccessor (refreshToken: string, salt: string): { accessToken: string, refreshToken: string } {
  const out = hash('sha512', COUNTER_1 + refreshToken + SUCCESSOR_LABEL + salt, 'buffer')
  return {
    accessToken: TOKEN_PREFIX.accessToken + out.toString('base64url', 0, 32),
    refreshToken: TOKEN_PREFIX.refreshToken + out.toString('base64url', 32, 64)
  }
}

/** `successor` as stored: the salt, a space, the space-separated scope of the pair. */
function successorInfo (salt: string, scope: string): string {
  return salt + ' ' + scope
}

/**
 * The pair again, from the old token and what the store kept; null when that is not ours.
 * `expires_in` is left for the caller, which knows when the access token expires.
 */
function replaySuccessor (refreshToken: string, info: string): TokenResponse | null {
  const space = info.indexOf(' ')
  const salt = space < 0 ? '' : info.slice(0, space)
  if (!/^[A-Za-z0-9_-]{22}$/.test(salt)) return null
  const pair = deriveSuccessor(refreshToken, salt)
  return {
    access_token: pair.accessToken,
    token_type: 'Bearer',
    expires_in: 0,
    refresh_token: pair.refreshToken,
    scope: info.slice(space + 1)
  }
}

/**
 * grant_type=refresh_token: rotation on every use, reuse detection by family, and a grace window
 * in which the same client repeating the same refresh receives the same successor pair.
 */
export class RefreshService {
  readonly #d: RefreshDeps

  constructor (deps: RefreshDeps) {
    this.#d = deps
  }

  async refresh (client: ClientRecord, body: Record<string, unknown>): Promise<TokenResponse> {
    const { store, config, auditor } = this.#d
    const token = body.refresh_token
    if (typeof token !== 'string' || token === '') throw new OAuthError('invalid_request', 'refresh_token is required')
    const invalid = () => new OAuthError('invalid_grant', 'The refresh token is invalid, expired or revoked')
    if (!looksLike('refreshToken', token)) throw invalid()
    const hash = hashToken(token)
    const now = this.#d.now()
    const record = await store.getRefreshToken(hash, now)
    if (record === null) throw invalid()
    if (record.clientId !== client.clientId) throw new OAuthError('invalid_grant', 'The refresh token was issued to another client')
    if (record.rotatedAt !== undefined) return this.#replayed(token, record, now)

    const grant = await store.getGrant(record.grantId, now)
    if (grant === null) throw invalid()
    const requested = typeof body.scope === 'string' ? body.scope : undefined
    const scopes = narrowScopes(requested, withinClient(record.scopes, client))
    if (!scopes.ok) throw new OAuthError('invalid_scope', scopes.description)
    if (body.resource !== undefined) {
      const match = typeof body.resource === 'string' ? matchResource(body.resource, config.resources) : null
      if (match === null || match.resource !== grant.resource) throw new OAuthError('invalid_target', 'The refresh token is bound to another resource')
    }

    const salt = generateId()
    const { accessToken, refreshToken } = deriveSuccessor(token, salt)
    const accessHash = hashToken(accessToken)
    const scope = scopes.scopes.join(' ')
    // Never past the grant (as at the first issue).
    const accessExpiresAt = Math.min(now + config.ttl.accessToken * 1000, grant.expiresAt)
    const pair: TokenResponse = {
      access_token: accessToken,
      token_type: 'Bearer',
      expires_in: secondsUntil(accessExpiresAt, now),
      refresh_token: refreshToken,
      scope
    }
    const access: AccessTokenRecord = {
      grantId: grant.grantId,
      clientId: grant.clientId,
      userId: grant.userId,
      scopes: scopes.scopes,
      resource: grant.resource,
      issuedAt: now,
      expiresAt: accessExpiresAt
    }
    if (grant.email !== undefined) access.email = grant.email
    const next: RefreshTokenRecord = {
      grantId: grant.grantId,
      clientId: grant.clientId,
      scopes: record.scopes,
      issuedAt: now,
      expiresAt: Math.min(now + config.ttl.refreshToken * 1000, grant.expiresAt)
    }
    const successor = { hash: hashToken(refreshToken), token: next }
    let result: RotateResult
    if (store.rotateRefreshTokenWithAccess !== undefined) {
      // One atomic step: the access token exists exactly when the rotation happened.
      result = await store.rotateRefreshTokenWithAccess(hash, successor, { hash: accessHash, token: access }, now, successorInfo(salt, scope))
    } else {
      // The access token is stored before the swap so that a concurrent loser, which hands out this
      // same pair from the grace window, never hands out a token the guard does not know yet.
      await store.saveAccessToken(accessHash, access)
      result = await store.rotateRefreshToken(hash, successor, now, successorInfo(salt, scope))
      if (result.status !== 'rotated') await store.deleteAccessToken(accessHash)
    }
    if (result.status === 'rotated') {
      auditor.emit('token_refreshed', { clientId: client.clientId, userId: grant.userId, grantId: grant.grantId })
      return pair
    }
    if (result.status === 'already_rotated') return this.#replayed(token, result.previous, now)
    throw invalid()
  }

  /** A token that was already rotated: the grace window, or reuse detection. */
  async #replayed (token: string, record: RefreshTokenRecord, now: number): Promise<TokenResponse> {
    const graceMs = this.#d.config.refreshGraceSeconds * 1000
    const rotatedAt = record.rotatedAt as number
    if (graceMs > 0 && now - rotatedAt <= graceMs && record.successor !== undefined) {
      const pair = replaySuccessor(token, record.successor)
      if (pair !== null) {
        // The same access token as the first answer: it expires when it did then (0 once it is gone).
        const access = await this.#d.store.getAccessToken(hashToken(pair.access_token), now)
        pair.expires_in = access === null ? 0 : secondsUntil(access.expiresAt, now)
        return pair
      }
    }
    await this.#d.revokeGrant(record.grantId)
    this.#d.auditor.emit('refresh_reuse', { clientId: record.clientId, grantId: record.grantId })
    throw new OAuthError('invalid_grant', 'The refresh token was already used; the grant has been revoked')
  }
}
