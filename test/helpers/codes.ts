import { s256 } from '../../lib/oauth/pkce.js'
import { generateId, generateToken, hashToken } from '../../lib/oauth/tokens.js'
import type { CodeRecord, FlowStore } from '../../lib/storage/contract.js'

/** The PKCE verifier of every code made by storeCode. */
export const CODE_VERIFIER = 'v'.repeat(43)

/**
 * An authorization code as the upstream callback stores it, written straight into a store, for tests
 * about what happens at the token endpoint (the upstream leg is not what they are about).
 */
export async function storeCode (
  store: Pick<FlowStore, 'saveCode'>,
  opts: { clientId: string, redirectUri: string, resource: string, userId?: string, now?: number }
): Promise<{ code: string, grantId: string }> {
  const code = generateToken('authorizationCode')
  const now = opts.now ?? Date.now()
  const grantId = generateId()
  const record: CodeRecord = {
    clientId: opts.clientId,
    redirectUri: opts.redirectUri,
    codeChallenge: s256(CODE_VERIFIER),
    codeChallengeMethod: 'S256',
    scopes: ['mcp:tools'],
    resource: opts.resource,
    grantId,
    userId: opts.userId ?? 'u-1',
    issuedAt: now,
    expiresAt: now + 60_000
  }
  await store.saveCode(hashToken(code), record)
  return { code, grantId }
}

/**
 * The store with one method held at `where` ('before' or 'after' the real call) until `release()`:
 * a first code exchange waits there while a replay runs. `atPause` resolves when it is reached.
 */
export function pauseAt<S extends object> (inner: S, method: string, where: 'before' | 'after'): { store: S, atPause: Promise<void>, release: () => void } {
  let reached!: () => void
  let release!: () => void
  const atPause = new Promise<void>(resolve => { reached = resolve })
  const gate = new Promise<void>(resolve => { release = resolve })
  const store = new Proxy(inner, {
    get (target, prop) {
      const value = Reflect.get(target, prop, target) as unknown
      if (typeof value !== 'function') return value
      const fn = (value as (...a: unknown[]) => unknown).bind(target)
      if (prop !== method) return fn
      return async (...args: unknown[]) => {
        if (where === 'before') { reached(); await gate }
        const out = await fn(...args)
        if (where === 'after') { reached(); await gate }
        return out
      }
    }
  })
  return { store, atPause, release }
}
