import type { Provider, UpstreamTokens, UpstreamUser } from '../providers/types.js'
import { renewedTokens } from '../providers/types.js'
import type { Auditor } from '../security/audit.js'
import type { KeyRing } from '../security/keyring.js'
import type { GrantRecord, Store } from '../storage/contract.js'
import { OAuthError, UpstreamError, UpstreamTokenError } from '../errors.js'

export interface UpstreamAccess {
  accessToken: string
  tokenType?: string
  /** Epoch ms, when the provider said. */
  expiresAt?: number
  scope?: string
}

export interface UpstreamDeps {
  store: Store
  provider: Provider | undefined
  keyRing: KeyRing
  auditor: Auditor
  now: () => number
  /** Refresh when the upstream token expires within this many ms. */
  thresholdMs: number
  /** Re-check the user upstream on our refresh once the last check is this old (ms); 0 = never. */
  recheckMs: number
  revokeGrant: (grantId: string) => Promise<boolean>
  /** Longest a replica waits for another one's upstream refresh (and the lease's lifetime). */
  lockWaitMs: number
}

/** The grant's upstream blob: the provider's tokens, and what the last check upstream found. */
interface Sealed extends UpstreamTokens {
  /** When the user last passed a check upstream (epoch ms); absent: at the grant's creation. */
  checkedAt?: number
  /**
   * Set since the upstream login and every check keep `email` here: the address the provider
   * verified then (absent: none). Grants of earlier versions lack it; their e-mail was stored
   * whether verified or not, so it is never passed on.
   */
  emailVerified?: true
  email?: string
  /** After an answer that could not be judged: no upstream call before this (epoch ms). */
  retryAt?: number
}

/** The upstream blob of a new grant: the provider's tokens and the verified e-mail of the login. */
export function loginUpstream (tokens: UpstreamTokens, email: string | undefined): string {
  const sealed: Sealed = { ...tokens, emailVerified: true }
  if (email !== undefined) sealed.email = email
  return JSON.stringify(sealed)
}

/** What the next access token of a grant carries about the user. */
export interface RecheckResult {
  /** A verified e-mail address, or undefined. */
  email?: string
}

/** What the grant needs to be known about it for a renewal. */
type GrantView = Pick<GrantRecord, 'grantId' | 'userId' | 'clientId' | 'createdAt' | 'email' | 'provider'>

/** Upstream failures after which the user must sign in again: our grant goes. */
const ACCESS_LOST = new Set(['invalid_grant', 'access_denied', 'not_allowed', 'identity_changed'])

/** Seconds a client is told to wait when the identity provider is unavailable. */
const RETRY_AFTER = 5
/**
 * Pause after an answer that could not be judged (a malformed reply, a failing mapUser): it is
 * not a verdict on the user, so the grant stays (503), but it tends to repeat, and each attempt
 * spends an upstream refresh.
 */
const UNJUDGED_PAUSE_MS = 5 * 60_000
const POLL_MS = 50

/**
 * The upstream provider's tokens for a grant, refreshed when close to expiry, and the re-check of
 * the user upstream that our refresh asks for (deprovisioning). Both renew the same thing: the
 * upstream refresh token is spent, the login policy runs again, the time of the check is sealed
 * with the new tokens. Concurrent callers for one grant share one renewal, within the process and
 * (with a store that offers leases) across replicas: a provider that rotates refresh tokens would
 * otherwise see its refresh token spent twice and revoke the user's session.
 */
export class UpstreamTokenService {
  readonly #d: UpstreamDeps
  readonly #inflight = new Map<string, Promise<void>>()

  constructor (deps: UpstreamDeps) {
    this.#d = deps
  }

  async get (grantId: string): Promise<UpstreamAccess> {
    const { tokens } = await this.#read(grantId)
    if (!this.#stale(tokens)) return access(tokens)
    if (this.#d.provider === undefined || tokens.refreshToken === undefined) {
      if (tokens.expiresAt !== undefined && tokens.expiresAt > this.#d.now()) return access(tokens)
      throw new UpstreamTokenError('The upstream access token expired and cannot be refreshed', false)
    }
    await this.#renew(grantId)
    return access((await this.#read(grantId)).tokens)
  }

  /**
   * Deprovisioning, on our refresh: when the user's last check upstream is older than the
   * interval, renew (one upstream call per grant however many refreshes race). Throws OAuthError:
   * invalid_grant when the user lost access (the grant is revoked by then), 503
   * temporarily_unavailable when the identity provider cannot answer now (the grant stays).
   */
  async recheck (grant: GrantRecord): Promise<RecheckResult> {
    const { provider, recheckMs } = this.#d
    // Grants without upstream tokens were not made by an upstream login (the application created
    // them through the API, with the e-mail it vouches for): there is nothing to check them against.
    if (provider === undefined || grant.upstream === undefined) return grant.email === undefined ? {} : { email: grant.email }
    // The login was a check: a grant younger than the interval is not due.
    const due = recheckMs > 0 && this.#d.now() - grant.createdAt >= recheckMs
    let tokens: Sealed
    try {
      tokens = this.#open(grant.grantId, grant.upstream)
    } catch (err) {
      // Whether the e-mail was verified is unknown here: leave it out.
      if (!due) return {}
      // Cannot check now, which is not the provider refusing: a replica missing a key must not end
      // every grant it touches.
      throw new OAuthError('temporarily_unavailable', 'The upstream tokens could not be read; retry later', { headers: { 'retry-after': String(RETRY_AFTER) }, cause: err })
    }
    if (due && this.#due(grant, tokens) && this.#askable(tokens, provider)) {
      try {
        await this.#renew(grant.grantId)
        tokens = (await this.#read(grant.grantId)).tokens
      } catch (err) {
        if (!(err instanceof UpstreamTokenError)) throw err
        if (err.retryable) throw new OAuthError('temporarily_unavailable', err.message, { headers: { 'retry-after': String(err.retryAfter ?? RETRY_AFTER) }, cause: err })
        throw new OAuthError('invalid_grant', err.message, { cause: err })
      }
    }
    return tokens.emailVerified === true && tokens.email !== undefined ? { email: tokens.email } : {}
  }

  /** Whether the provider can be asked about the user with these tokens; audits when it cannot. */
  #askable (tokens: Sealed, provider: Provider): boolean {
    if (tokens.refreshToken !== undefined) return true
    // A provider without recheck() checks by refreshing; without a refresh token it cannot.
    if (provider.recheck === undefined) return false
    // Only the stored access token could ask, and it has expired: any answer would be a refusal of
    // the token, not of the user. The check waits for the next login (the README states the window).
    if (tokens.expiresAt !== undefined && tokens.expiresAt <= this.#d.now()) {
      this.#d.auditor.emit('upstream_failure', { provider: provider.name, kind: 'recheck_impossible', step: 'refresh' })
      return false
    }
    return true
  }

  #stale (tokens: UpstreamTokens): boolean {
    return tokens.expiresAt !== undefined && tokens.expiresAt - this.#d.now() <= this.#d.thresholdMs
  }

  #due (grant: GrantView, tokens: Sealed): boolean {
    return this.#d.recheckMs > 0 && this.#d.now() - (tokens.checkedAt ?? grant.createdAt) >= this.#d.recheckMs
  }

  #open (grantId: string, sealed: string): Sealed {
    try {
      return JSON.parse(this.#d.keyRing.open(sealed, grantId)) as Sealed
    } catch (err) {
      throw new UpstreamTokenError('The upstream tokens could not be decrypted (key ring changed?)', false, { cause: err })
    }
  }

  async #read (grantId: string): Promise<{ grant: GrantView, tokens: Sealed }> {
    const grant = await this.#d.store.getGrant(grantId, this.#d.now())
    if (grant === null) throw new UpstreamTokenError('The grant no longer exists', false)
    if (grant.upstream === undefined) throw new UpstreamTokenError('The grant holds no upstream tokens', false)
    return { grant, tokens: this.#open(grantId, grant.upstream) }
  }

  /** One renewal per grant in this process: a caller arriving meanwhile waits for it (it does what they need). */
  async #renew (grantId: string): Promise<void> {
    let pending = this.#inflight.get(grantId)
    if (pending === undefined) {
      pending = this.#renewLeased(grantId).finally(() => this.#inflight.delete(grantId))
      this.#inflight.set(grantId, pending)
    }
    return pending
  }

  async #renewLeased (grantId: string): Promise<void> {
    const { store } = this.#d
    if (store.acquireLock === undefined || store.releaseLock === undefined) return this.#renewHeld(grantId)
    // Across replicas: one lease per grant; the others wait for its result instead of spending
    // the same upstream refresh token a second time.
    const key = `upstream-refresh:${grantId}`
    const deadline = this.#d.now() + this.#d.lockWaitMs
    // Bounded by polls as well as by the clock (which tests may hold still).
    for (let poll = 0; ; poll++) {
      const owner = await store.acquireLock(key, this.#d.lockWaitMs)
      if (owner !== null) {
        try {
          return await this.#renewHeld(grantId)
        } finally {
          await store.releaseLock(key, owner).catch(() => {})
        }
      }
      await new Promise(resolve => setTimeout(resolve, POLL_MS))
      const { grant, tokens } = await this.#read(grantId)
      if (!this.#stale(tokens) && !this.#due(grant, tokens)) return
      if (this.#d.now() > deadline || poll * POLL_MS > this.#d.lockWaitMs) {
        throw new UpstreamTokenError('Another replica is refreshing the upstream token; retry shortly', true)
      }
    }
  }

  async #renewHeld (grantId: string): Promise<void> {
    // Read again inside the single flight: another replica or caller may have renewed already.
    const { grant, tokens: sealed } = await this.#read(grantId)
    if (!this.#stale(sealed) && !this.#due(grant, sealed)) return
    const provider = this.#d.provider
    const { checkedAt: _checkedAt, emailVerified: _verified, email: _email, retryAt, ...tokens } = sealed
    if (retryAt !== undefined && retryAt > this.#d.now()) {
      throw new UpstreamTokenError('The identity provider\'s last answer could not be accepted; retry later', true, { retryAfter: Math.ceil((retryAt - this.#d.now()) / 1000) })
    }
    if (provider === undefined || (provider.recheck === undefined && tokens.refreshToken === undefined)) return
    // Never hand one provider's tokens to another.
    if (grant.provider !== undefined && grant.provider !== provider.name) {
      return await this.#lost(grant, provider.name, 'provider_changed', 'The grant was made through another identity provider; the user must sign in again')
    }
    let next: UpstreamTokens
    let user: UpstreamUser | undefined
    try {
      if (provider.recheck !== undefined) ({ tokens: next, user } = await provider.recheck(tokens))
      else next = await provider.refresh(tokens)
    } catch (err) {
      const kind = err instanceof UpstreamError ? err.kind : 'temporary'
      this.#d.auditor.emit('upstream_failure', { provider: provider.name, kind, step: 'refresh' })
      const kept = renewedTokens(err)
      if (kept !== undefined) {
        // The upstream refresh went through before the failure: the refresh token we held is spent
        // (rotating providers refuse it from now on), so the new tokens are kept, the check is not.
        const { checkedAt, emailVerified, email } = sealed
        const failed: Sealed = { ...withRefresh(kept, tokens), ...(checkedAt === undefined ? {} : { checkedAt }), ...(emailVerified === undefined ? {} : { emailVerified }), ...(email === undefined ? {} : { email }) }
        if (kind === 'invalid_response') failed.retryAt = this.#d.now() + UNJUDGED_PAUSE_MS
        await this.#save(grantId, failed)
      }
      if (ACCESS_LOST.has(kind)) {
        const why = kind === 'not_allowed' && err instanceof UpstreamError
          ? `${err.message}; `
          : kind === 'identity_changed' ? 'The identity provider now names another user; ' : 'The identity provider ended the session; '
        return await this.#lost(grant, provider.name, kind, `${why}the user must sign in again`, err)
      }
      throw new UpstreamTokenError('The identity provider is unavailable; retry later', true, { cause: err })
    }
    // The user id is the identity; the e-mail is an attribute the provider may change or stop
    // vouching for (the login policy, run by recheck(), refuses what it must).
    if (user !== undefined && user.id !== grant.userId) {
      return await this.#lost(grant, provider.name, 'identity_changed', 'The identity provider now describes the user differently; the user must sign in again')
    }
    const renewed: Sealed = { ...withRefresh(next, tokens), checkedAt: this.#d.now() }
    if (user !== undefined) {
      renewed.emailVerified = true
      if (user.emailVerified === true && user.email !== undefined) renewed.email = user.email
    } else {
      // Refreshed without asking about the user (no recheck()): what was known stays.
      if (sealed.emailVerified !== undefined) renewed.emailVerified = sealed.emailVerified
      if (sealed.email !== undefined) renewed.email = sealed.email
    }
    await this.#save(grantId, renewed)
  }

  async #save (grantId: string, sealed: Sealed): Promise<void> {
    const stored = await this.#d.store.updateGrantUpstream(grantId, this.#d.keyRing.seal(JSON.stringify(sealed), grantId), this.#d.now())
    if (!stored) throw new UpstreamTokenError('The grant was revoked during the refresh', false)
  }

  /** The user lost access upstream: revoke the grant (with its upstream tokens) and say so. */
  async #lost (grant: GrantView, provider: string, reason: string, message: string, cause?: unknown): Promise<never> {
    await this.#d.revokeGrant(grant.grantId)
    this.#d.auditor.emit('upstream_access_lost', { provider, reason, clientId: grant.clientId, userId: grant.userId, grantId: grant.grantId })
    throw new UpstreamTokenError(message, false, cause === undefined ? undefined : { cause })
  }
}

/** The provider's new tokens, keeping the old refresh token when it sent none. */
function withRefresh (next: UpstreamTokens, previous: UpstreamTokens): UpstreamTokens {
  return next.refreshToken === undefined && previous.refreshToken !== undefined ? { ...next, refreshToken: previous.refreshToken } : next
}

function access (tokens: UpstreamTokens): UpstreamAccess {
  const out: UpstreamAccess = { accessToken: tokens.accessToken }
  if (tokens.tokenType !== undefined) out.tokenType = tokens.tokenType
  if (tokens.expiresAt !== undefined) out.expiresAt = tokens.expiresAt
  if (tokens.scope !== undefined) out.scope = tokens.scope
  return out
}
