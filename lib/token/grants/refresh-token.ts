import { createHmac } from 'node:crypto'
import { OAuthError } from '../../errors.js'
import type { ResolvedConfig } from '../../options/index.js'
import type { Auditor } from '../../security/audit.js'
import type { ClientRecord, RefreshTokenRecord, Store } from '../../storage/contract.js'
import { buildTokens, secondsUntil, type TokenPair } from '../issue.js'
import { matchResource } from '../../oauth/resource.js'
import { narrowScopes, withinClient } from '../../oauth/scopes.js'
import { generateId, hashToken, looksLike, TOKEN_PREFIX } from '../../oauth/tokens.js'

export interface RefreshTokenDeps {
  config: ResolvedConfig
  store: Store
  auditor: Auditor
  now: () => number
  /** Family revocation, including the upstream grant. */
  revokeGrant: (grantId: string) => Promise<boolean>
  /**
   * Deprovisioning: re-checks the user upstream when due; throws OAuthError (invalid_grant, 503).
   * Says which e-mail the new access token carries (only a verified one; the grant's may be stale or unverified).
   */
  recheck?: (grant: NonNullable<Awaited<ReturnType<Store['getGrant']>>>) => Promise<{ email?: string }>
  /** The deployment's 'refresh-successor' key (DeploymentKeys): the same on every replica, never in the store. */
  successorKey: Buffer
}

/** The parameters of grant_type=refresh_token (RFC 6749 §6, RFC 8707). */
export interface RefreshRequest {
  refreshToken?: string
  scope?: string
  resource?: string
}

/** What the derivation is for (a new label for a new derivation: v2 was unkeyed). */
const SUCCESSOR_LABEL = 'mcp-oauth refresh successor v3\0'

/**
 * The successor pair of a rotation is derived, not drawn: HMAC-SHA512 keyed with the deployment's
 * successor key, over a label, a fresh random salt, the granted scope and the old refresh token,
 * gives 64 bytes, the first half the access token, the second the refresh token (256 bits each).
 * The store keeps the salt and the scope (`successor`) for the grace window only, so that within it
 * a caller presenting the old token gets the same pair again. Computing the pair takes the old
 * token, the salt and the key together: the old token alone lacks the salt, a read of the store
 * (a replica, a backup) lacks the token and the key, and past the window the salt is gone too.
 */
function deriveSuccessor (key: Buffer, refreshToken: string, salt: string, scope: string): { accessToken: string, refreshToken: string } {
  const out = createHmac('sha512', key).update(SUCCESSOR_LABEL + salt + ' ' + scope + '\0' + refreshToken).digest()
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
function rebuildSuccessor (key: Buffer, refreshToken: string, info: string): TokenPair | null {
  const space = info.indexOf(' ')
  const salt = space < 0 ? '' : info.slice(0, space)
  if (!/^[A-Za-z0-9_-]{22}$/.test(salt)) return null
  const scope = info.slice(space + 1)
  const pair = deriveSuccessor(key, refreshToken, salt, scope)
  return {
    access_token: pair.accessToken,
    token_type: 'Bearer',
    expires_in: 0,
    refresh_token: pair.refreshToken,
    scope
  }
}

/**
 * grant_type=refresh_token: rotation on every use, reuse detection by family, and a grace window
 * in which the same client repeating the same refresh receives the same successor pair.
 */
export class RefreshTokenGrant {
  readonly #d: RefreshTokenDeps

  constructor (deps: RefreshTokenDeps) {
    this.#d = deps
  }

  /** Throws OAuthError. */
  async refresh (client: ClientRecord, { refreshToken: token, scope: requested, resource }: RefreshRequest): Promise<TokenPair> {
    const { store, config, auditor } = this.#d
    if (token === undefined || token === '') throw new OAuthError('invalid_request', 'refresh_token is required')
    const invalid = () => new OAuthError('invalid_grant', 'The refresh token is invalid, expired or revoked')
    if (!looksLike('refreshToken', token)) throw invalid()
    const hash = hashToken(token)
    const now = this.#d.now()
    const record = await store.getRefreshToken(hash, now)
    if (record === null) throw invalid()
    if (record.clientId !== client.clientId) throw new OAuthError('invalid_grant', 'The refresh token was issued to another client')
    // A static client may have its own window; every other client has the plugin's.
    const graceMs = (client.refreshGraceSeconds ?? config.refreshGraceSeconds) * 1000
    if (record.rotatedAt !== undefined) return this.#replayed(token, hash, record, now, graceMs)

    const grant = await store.getGrant(record.grantId, now)
    if (grant === null) throw invalid()
    const checked = await this.#d.recheck?.(grant)
    const scopes = narrowScopes(requested, withinClient(record.scopes, client))
    if (!scopes.ok) throw new OAuthError('invalid_scope', scopes.description)
    if (resource !== undefined && matchResource(resource, config.resources)?.resource !== grant.resource) {
      throw new OAuthError('invalid_target', 'The refresh token is bound to another resource')
    }

    const salt = generateId()
    const scope = scopes.scopes.join(' ')
    const { access, refresh, response } = buildTokens(config.ttl, {
      grant,
      scopes: scopes.scopes,
      // The successor keeps the scopes of the token it replaces: a narrowed refresh narrows only its access token.
      refreshScopes: record.scopes,
      email: checked === undefined ? grant.email : checked.email,
      values: deriveSuccessor(this.#d.successorKey, token, salt, scope),
      now
    })
    // The salt is kept for the grace window only (inclusive, as the replay checks it), and not at all without one.
    const info = graceMs > 0 ? successorInfo(salt, scope) : undefined
    const keepUntil = graceMs > 0 ? now + graceMs + 1 : undefined
    // One atomic step: the access token exists exactly when the rotation happened.
    const result = await store.rotateRefreshTokenWithAccess(hash, refresh, access, now, info, keepUntil)
    if (result.status === 'rotated') {
      auditor.emit('token_refreshed', { clientId: client.clientId, userId: grant.userId, grantId: grant.grantId })
      return response
    }
    if (result.status === 'already_rotated') return this.#replayed(token, hash, result.previous, now, graceMs)
    throw invalid()
  }

  /**
   * A token that was already rotated: the grace window (at most `refreshGraceMaxReplays` times,
   * counted by the store across replicas), or reuse detection.
   */
  async #replayed (token: string, hash: string, record: RefreshTokenRecord, now: number, graceMs: number): Promise<TokenPair> {
    const { store, config } = this.#d
    const rotatedAt = record.rotatedAt as number
    if (graceMs > 0 && now - rotatedAt <= graceMs) {
      const kept = await store.replayRefreshToken(hash, now)
      if (kept === null) {
        // Rotated within the window, but no successor data is kept: the rotation was made by a
        // replica of the previous version (its salt sat elsewhere) during a rolling upgrade. A retry
        // is normal there; it must not cost the user the family.
        throw new OAuthError('invalid_grant', 'The refresh token was already used and its successor cannot be rebuilt; use the newest refresh token')
      }
      const pair = kept.replays <= config.refreshGraceMaxReplays
        ? rebuildSuccessor(this.#d.successorKey, token, kept.successor)
        : null
      if (pair !== null) {
        const [next, access] = await Promise.all([
          store.getRefreshToken(hashToken(pair.refresh_token), now),
          store.getAccessToken(hashToken(pair.access_token), now)
        ])
        if (next === null || next.grantId !== record.grantId) {
          // Not the pair the rotation stored: another key derived it (no `secret`, or replicas with
          // different ones), or the family has just gone. Never hand it out; not reuse either.
          throw new OAuthError('invalid_grant', 'The refresh token was already used, and its successor cannot be rebuilt here ' +
            '(replicas must share the `secret` option for grace-window retries); use the newest refresh token')
        }
        // The same access token as the first answer: it expires when it did then (0 once it is gone).
        pair.expires_in = access === null ? 0 : secondsUntil(access.expiresAt, now)
        return pair
      }
    }
    await this.#d.revokeGrant(record.grantId)
    this.#d.auditor.emit('refresh_reuse', { clientId: record.clientId, grantId: record.grantId })
    throw new OAuthError('invalid_grant', 'The refresh token was already used; the grant has been revoked')
  }
}
