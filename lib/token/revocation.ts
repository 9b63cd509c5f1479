import { OAuthError } from '../errors.js'
import type { ResolvedConfig } from '../options/index.js'
import type { Provider, UpstreamTokens } from '../providers/types.js'
import type { Auditor } from '../security/audit.js'
import type { KeyRing } from '../security/keyring.js'
import type { AccessTokenRecord, ClientRecord, GrantRecord, RefreshTokenRecord, Store } from '../storage/contract.js'
import { hashToken, looksLike } from '../oauth/tokens.js'

export interface RevocationDeps {
  config: ResolvedConfig
  store: Store
  provider: Provider | undefined
  keyRing: KeyRing
  auditor: Auditor
  now: () => number
  /** Schedules a background retry; returns a cancel function. Timers are the plugin's to release. */
  schedule: (ms: number, fn: () => void) => void
}

export type Introspection =
  | { active: false }
  | {
    active: true
    scope: string
    client_id: string
    sub: string
    /** Who `sub` is: a user, or the client itself (client credentials; `sub` is then the client id). */
    subject_type: 'user' | 'client'
    aud: string
    iss: string
    exp: number
    iat: number
    token_type: string
  }

/** A revocation or introspection request's token (RFC 7009 §2.1, RFC 7662 §2.1). */
export interface TokenQuery {
  token: string
  /** A hint, not a filter: an unknown hint is refused at revocation, ignored at introspection. */
  tokenTypeHint?: string
}

type Found =
  | { kind: 'access_token', hash: string, record: AccessTokenRecord }
  | { kind: 'refresh_token', hash: string, record: RefreshTokenRecord }

const UPSTREAM_ATTEMPTS = 3

/**
 * Revocation (RFC 7009), introspection (RFC 7662) and sign-out everywhere. Local revocation is
 * immediate and never waits on the identity provider; the upstream grant is revoked in the
 * background, with retries, once the local grant holding it is gone.
 */
export class RevocationService {
  readonly #d: RevocationDeps

  constructor (deps: RevocationDeps) {
    this.#d = deps
  }

  /** Find a token of ours, trying the hinted type first (the hint is a hint, not a filter). */
  async #find (token: string, hint: unknown): Promise<Found | null> {
    const now = this.#d.now()
    const hash = hashToken(token)
    const order = hint === 'refresh_token' ? ['refresh_token', 'access_token'] : ['access_token', 'refresh_token']
    for (const kind of order) {
      if (kind === 'access_token' && looksLike('accessToken', token)) {
        const record = await this.#d.store.getAccessToken(hash, now)
        if (record !== null) return { kind, hash, record }
      }
      if (kind === 'refresh_token' && looksLike('refreshToken', token)) {
        const record = await this.#d.store.getRefreshToken(hash, now)
        if (record !== null) return { kind, hash, record }
      }
    }
    return null
  }

  /** RFC 7009. Unknown tokens succeed silently; another client's token is refused. */
  async revoke (client: ClientRecord, { token, tokenTypeHint }: TokenQuery): Promise<void> {
    if (token === '') throw new OAuthError('invalid_request', 'token is required')
    if (tokenTypeHint !== undefined && tokenTypeHint !== 'access_token' && tokenTypeHint !== 'refresh_token') {
      throw new OAuthError('unsupported_token_type', 'token_type_hint must be access_token or refresh_token')
    }
    const found = await this.#find(token, tokenTypeHint)
    if (found === null) return
    if (found.record.clientId !== client.clientId) {
      throw new OAuthError('unauthorized_client', 'The token was issued to another client')
    }
    if (found.kind === 'access_token') {
      await this.#d.store.deleteAccessToken(found.hash)
      this.#d.auditor.emit('token_revoked', { clientId: client.clientId, grantId: found.record.grantId, tokenType: 'access_token' })
      return
    }
    await this.revokeGrant(found.record.grantId)
    this.#d.auditor.emit('token_revoked', { clientId: client.clientId, grantId: found.record.grantId, tokenType: 'refresh_token' })
  }

  /** RFC 7662. Confidential clients see their own tokens; configured resource servers see all. */
  async introspect (caller: { clientId: string, resourceServer: boolean }, { token, tokenTypeHint }: TokenQuery): Promise<Introspection> {
    if (token === '') throw new OAuthError('invalid_request', 'token is required')
    const found = await this.#find(token, tokenTypeHint)
    if (found === null) return { active: false }
    if (!caller.resourceServer && found.record.clientId !== caller.clientId) return { active: false }
    if (found.kind === 'refresh_token' && found.record.rotatedAt !== undefined) return { active: false }
    const grant = await this.#d.store.getGrant(found.record.grantId, this.#d.now())
    if (grant === null) return { active: false }
    return {
      active: true,
      scope: found.record.scopes.join(' '),
      client_id: found.record.clientId,
      sub: grant.userId,
      subject_type: grant.subjectType ?? 'user',
      aud: grant.resource,
      iss: this.#d.config.issuer,
      exp: Math.floor(found.record.expiresAt / 1000),
      iat: Math.floor(found.record.issuedAt / 1000),
      token_type: found.kind === 'access_token' ? 'Bearer' : 'refresh_token'
    }
  }

  /** Remove a grant and its whole family; revoke its upstream tokens in the background. */
  async revokeGrant (grantId: string): Promise<boolean> {
    const grant = await this.#d.store.getGrant(grantId, this.#d.now())
    const removed = await this.#d.store.revokeGrant(grantId)
    if (removed && grant !== null) this.#revokeUpstream(grant)
    return removed
  }

  async revokeUser (userId: string): Promise<number> {
    return this.#revokeAll(await this.#d.store.listGrants({ userId }, this.#d.now()))
  }

  async revokeClient (clientId: string): Promise<number> {
    return this.#revokeAll(await this.#d.store.listGrants({ clientId }, this.#d.now()))
  }

  async #revokeAll (grantIds: string[]): Promise<number> {
    let n = 0
    for (const id of grantIds) if (await this.revokeGrant(id)) n++
    return n
  }

  #revokeUpstream (grant: GrantRecord): void {
    const provider = this.#d.provider
    if (provider?.revoke === undefined || grant.upstream === undefined) return
    let tokens: UpstreamTokens
    try {
      tokens = JSON.parse(this.#d.keyRing.open(grant.upstream, grant.grantId)) as UpstreamTokens
    } catch {
      return
    }
    const revoke = provider.revoke.bind(provider)
    const attempt = (n: number): void => {
      revoke(tokens).catch(err => {
        const kind = (err as { kind?: string }).kind ?? 'unknown'
        this.#d.auditor.emit('upstream_failure', { provider: provider.name, kind, step: 'revoke' })
        if (kind === 'temporary' && n + 1 < UPSTREAM_ATTEMPTS) this.#d.schedule(1000 * 2 ** n, () => attempt(n + 1))
      })
    }
    attempt(0)
  }
}
