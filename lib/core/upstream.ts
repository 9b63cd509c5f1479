import type { Provider, UpstreamTokens } from '../providers/types.js'
import { UpstreamError } from '../providers/types.js'
import type { Auditor } from '../security/audit.js'
import type { KeyRing } from '../security/keyring.js'
import type { Store } from '../storage/types.js'

export interface UpstreamAccess {
  accessToken: string
  tokenType?: string
  /** Epoch ms, when the provider said. */
  expiresAt?: number
  scope?: string
}

/** Why getUpstreamToken() could not deliver: `retryable` false means the user must log in again. */
export class UpstreamTokenError extends Error {
  readonly retryable: boolean
  constructor (message: string, retryable: boolean, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'UpstreamTokenError'
    this.retryable = retryable
  }
}

export interface UpstreamDeps {
  store: Store
  provider: Provider | undefined
  keyRing: KeyRing
  auditor: Auditor
  now: () => number
  /** Refresh when the upstream token expires within this many ms. */
  thresholdMs: number
  revokeGrant: (grantId: string) => Promise<boolean>
  /** Longest a replica waits for another one's upstream refresh (and the lease's lifetime). */
  lockWaitMs: number
}

/**
 * The upstream provider's tokens for a grant, refreshed when close to expiry. Concurrent callers
 * for one grant share one upstream refresh (a provider that rotates refresh tokens would otherwise
 * see its refresh token spent twice and revoke the user's session).
 */
export class UpstreamTokenService {
  readonly #d: UpstreamDeps
  readonly #inflight = new Map<string, Promise<UpstreamAccess>>()

  constructor (deps: UpstreamDeps) {
    this.#d = deps
  }

  async get (grantId: string): Promise<UpstreamAccess> {
    const tokens = await this.#read(grantId)
    if (!this.#stale(tokens)) return access(tokens)
    let pending = this.#inflight.get(grantId)
    if (pending === undefined) {
      pending = this.#refresh(grantId).finally(() => this.#inflight.delete(grantId))
      this.#inflight.set(grantId, pending)
    }
    return pending
  }

  #stale (tokens: UpstreamTokens): boolean {
    return tokens.expiresAt !== undefined && tokens.expiresAt - this.#d.now() <= this.#d.thresholdMs
  }

  async #read (grantId: string): Promise<UpstreamTokens> {
    const grant = await this.#d.store.getGrant(grantId, this.#d.now())
    if (grant === null) throw new UpstreamTokenError('The grant no longer exists', false)
    if (grant.upstream === undefined) throw new UpstreamTokenError('The grant holds no upstream tokens', false)
    try {
      return JSON.parse(this.#d.keyRing.open(grant.upstream, grantId)) as UpstreamTokens
    } catch (err) {
      throw new UpstreamTokenError('The upstream tokens could not be decrypted (key ring changed?)', false, { cause: err })
    }
  }

  async #refresh (grantId: string): Promise<UpstreamAccess> {
    const { store } = this.#d
    if (store.acquireLock === undefined || store.releaseLock === undefined) return this.#refreshHeld(grantId)
    // Across replicas: one lease per grant; the others wait for its result instead of spending
    // the same upstream refresh token a second time.
    const key = `upstream-refresh:${grantId}`
    const deadline = this.#d.now() + this.#d.lockWaitMs
    for (;;) {
      const owner = await store.acquireLock(key, this.#d.lockWaitMs)
      if (owner !== null) {
        try {
          return await this.#refreshHeld(grantId)
        } finally {
          await store.releaseLock(key, owner).catch(() => {})
        }
      }
      await new Promise(resolve => setTimeout(resolve, 50))
      const tokens = await this.#read(grantId)
      if (!this.#stale(tokens)) return access(tokens)
      if (this.#d.now() > deadline) throw new UpstreamTokenError('Another replica is refreshing the upstream token; retry shortly', true)
    }
  }

  async #refreshHeld (grantId: string): Promise<UpstreamAccess> {
    // Read again inside the single flight: another replica or caller may have refreshed already.
    const tokens = await this.#read(grantId)
    if (!this.#stale(tokens)) return access(tokens)
    const provider = this.#d.provider
    if (provider === undefined || tokens.refreshToken === undefined) {
      if (tokens.expiresAt !== undefined && tokens.expiresAt > this.#d.now()) return access(tokens)
      throw new UpstreamTokenError('The upstream access token expired and cannot be refreshed', false)
    }
    let next: UpstreamTokens
    try {
      next = await provider.refresh(tokens)
    } catch (err) {
      const kind = err instanceof UpstreamError ? err.kind : 'temporary'
      this.#d.auditor.emit('upstream_failure', { provider: provider.name, kind, step: 'refresh' })
      if (kind === 'invalid_grant') {
        await this.#d.revokeGrant(grantId)
        throw new UpstreamTokenError('The identity provider revoked the session; the user must sign in again', false, { cause: err })
      }
      throw new UpstreamTokenError('The identity provider is unavailable; retry later', true, { cause: err })
    }
    if (next.refreshToken === undefined && tokens.refreshToken !== undefined) next = { ...next, refreshToken: tokens.refreshToken }
    const stored = await this.#d.store.updateGrantUpstream(grantId, this.#d.keyRing.seal(JSON.stringify(next), grantId), this.#d.now())
    if (!stored) throw new UpstreamTokenError('The grant was revoked during the refresh', false)
    return access(next)
  }
}

function access (tokens: UpstreamTokens): UpstreamAccess {
  const out: UpstreamAccess = { accessToken: tokens.accessToken }
  if (tokens.tokenType !== undefined) out.tokenType = tokens.tokenType
  if (tokens.expiresAt !== undefined) out.expiresAt = tokens.expiresAt
  if (tokens.scope !== undefined) out.scope = tokens.scope
  return out
}
