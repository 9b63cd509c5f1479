import { createCipheriv, createDecipheriv, createHmac } from 'node:crypto'
import { OAuthError } from '../errors.js'
import type { ResolvedConfig } from '../options.js'
import type { Auditor } from '../security/audit.js'
import type { ClientRecord, RefreshTokenRecord, Store } from '../storage/types.js'
import type { TokenResponse } from './grants.js'
import { matchResource } from './resource.js'
import { narrowScopes } from './scopes.js'
import { generateToken, hashToken, looksLike, randomBuffer } from './tokens.js'

export interface RefreshDeps {
  config: ResolvedConfig
  store: Store
  auditor: Auditor
  now: () => number
  /** Family revocation, including the upstream grant. */
  revokeGrant: (grantId: string) => Promise<boolean>
}

/**
 * The successor pair is kept with the rotated token for the grace window, encrypted under a key
 * derived from the old refresh token itself: the store (which holds only SHA-256 of that token)
 * cannot read it; only a caller presenting the old token can.
 */
function successorKey (refreshToken: string): Buffer {
  return createHmac('sha256', refreshToken).update('mcp-oauth refresh successor v1').digest()
}

function sealSuccessor (refreshToken: string, pair: TokenResponse): string {
  const iv = randomBuffer(12)
  const cipher = createCipheriv('aes-256-gcm', successorKey(refreshToken), iv)
  const body = Buffer.concat([cipher.update(JSON.stringify(pair), 'utf8'), cipher.final()])
  return [iv, body, cipher.getAuthTag()].map(b => b.toString('base64url')).join('.')
}

function openSuccessor (refreshToken: string, sealed: string): TokenResponse | null {
  const [iv, body, tag] = sealed.split('.')
  if (iv === undefined || body === undefined || tag === undefined) return null
  try {
    const decipher = createDecipheriv('aes-256-gcm', successorKey(refreshToken), Buffer.from(iv, 'base64url'))
    decipher.setAuthTag(Buffer.from(tag, 'base64url'))
    return JSON.parse(Buffer.concat([decipher.update(Buffer.from(body, 'base64url')), decipher.final()]).toString('utf8')) as TokenResponse
  } catch {
    return null
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
    const scope = typeof body.scope === 'string' ? body.scope : undefined
    const scopes = narrowScopes(scope, record.scopes)
    if (!scopes.ok) throw new OAuthError('invalid_scope', scopes.description)
    if (body.resource !== undefined) {
      const match = typeof body.resource === 'string' ? matchResource(body.resource, config.resources) : null
      if (match === null || match.resource !== grant.resource) throw new OAuthError('invalid_target', 'The refresh token is bound to another resource')
    }

    const accessToken = generateToken('accessToken')
    const refreshToken = generateToken('refreshToken')
    const accessHash = hashToken(accessToken)
    const pair: TokenResponse = {
      access_token: accessToken,
      token_type: 'Bearer',
      expires_in: config.ttl.accessToken,
      refresh_token: refreshToken,
      scope: scopes.scopes.join(' ')
    }
    // The access token is stored before the swap so that a concurrent loser, which hands out this
    // same pair from the grace window, never hands out a token the guard does not know yet.
    await store.saveAccessToken(accessHash, {
      grantId: grant.grantId,
      clientId: grant.clientId,
      userId: grant.userId,
      scopes: scopes.scopes,
      resource: grant.resource,
      issuedAt: now,
      expiresAt: now + config.ttl.accessToken * 1000,
      ...(grant.email !== undefined ? { email: grant.email } : {})
    })
    const next: RefreshTokenRecord = {
      grantId: grant.grantId,
      clientId: grant.clientId,
      scopes: record.scopes,
      issuedAt: now,
      expiresAt: Math.min(now + config.ttl.refreshToken * 1000, grant.expiresAt)
    }
    const result = await store.rotateRefreshToken(hash, { hash: hashToken(refreshToken), token: next }, now, sealSuccessor(token, pair))
    if (result.status === 'rotated') {
      auditor.emit('token_refreshed', { clientId: client.clientId, userId: grant.userId, grantId: grant.grantId })
      return pair
    }
    await store.deleteAccessToken(accessHash)
    if (result.status === 'already_rotated') return this.#replayed(token, result.previous, now)
    throw invalid()
  }

  /** A token that was already rotated: the grace window, or reuse detection. */
  async #replayed (token: string, record: RefreshTokenRecord, now: number): Promise<TokenResponse> {
    const graceMs = this.#d.config.refreshGraceSeconds * 1000
    const rotatedAt = record.rotatedAt as number
    if (graceMs > 0 && now - rotatedAt <= graceMs && record.successor !== undefined) {
      const pair = openSuccessor(token, record.successor)
      if (pair !== null) return pair
    }
    await this.#d.revokeGrant(record.grantId)
    this.#d.auditor.emit('refresh_reuse', { clientId: record.clientId, grantId: record.grantId })
    throw new OAuthError('invalid_grant', 'The refresh token was already used; the grant has been revoked')
  }
}
