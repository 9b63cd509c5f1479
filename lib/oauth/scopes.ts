import { OAuthError } from '../errors.js'

/** RFC 6749 §3.3 scope-token: printable ASCII except space, double quote and backslash. */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/

export type ScopeDecision =
  | { ok: true, scopes: string[] }
  | { ok: false, description: string }

/**
 * Parse a requested scope string against what is supported. An absent or empty request gets the
 * defaults. Scopes in `ignored` (offline_access: refresh tokens are always issued) are dropped.
 */
export function decideScopes (
  requested: string | undefined,
  supported: readonly string[],
  defaults: readonly string[],
  ignored: readonly string[] = IGNORED
): ScopeDecision {
  const wanted = requestedScopes(requested)
  if (wanted === undefined) return { ok: true, scopes: [...defaults] }
  if (wanted === null) return { ok: false, description: 'The scope parameter is malformed' }
  const scopes: string[] = []
  let unknown: string[] | undefined
  for (const s of wanted) {
    if (supported.includes(s)) scopes.push(s)
    else if (!ignored.includes(s)) (unknown ??= []).push(s)
  }
  if (unknown !== undefined) {
    return { ok: false, description: `Unsupported scope: ${unknown.slice(0, 5).join(' ')}`.slice(0, 200) }
  }
  return { ok: true, scopes: scopes.length > 0 ? scopes : [...defaults] }
}

const IGNORED: readonly string[] = ['offline_access']

/**
 * The scope-tokens of a request, once each in the order given; undefined when it asks for nothing
 * (absent, empty or blanks), null when a token is malformed. Spaces separate (RFC 6749 §3.3); the
 * usual request, one token, costs one test.
 */
function requestedScopes (requested: string | undefined): string[] | undefined | null {
  if (requested === undefined) return undefined
  if (requested.indexOf(' ') < 0) {
    if (requested === '') return undefined
    return SCOPE_TOKEN.test(requested) ? [requested] : (requested.trim() === '' ? undefined : null)
  }
  // Each once, in the order given (a set: the parameter may hold 2000 tokens).
  const wanted = new Set<string>()
  for (const s of requested.split(' ')) {
    if (s === '' || wanted.has(s)) continue
    if (!SCOPE_TOKEN.test(s)) return requested.trim() === '' ? undefined : null
    wanted.add(s)
  }
  return wanted.size === 0 ? undefined : [...wanted]
}

/** For refresh: a requested scope may only narrow the grant (already narrowed to the client, see withinClient). */
export function narrowScopes (requested: string | undefined, granted: readonly string[]): ScopeDecision {
  // Empty only when the client's registered scope no longer covers any of the grant's.
  if (granted.length === 0) return { ok: false, description: 'None of the granted scopes is still registered for this client' }
  if (requested === undefined || requested.trim() === '') return { ok: true, scopes: [...granted] }
  const wanted = [...new Set(requested.split(' ').filter(s => s !== ''))]
  const extra = wanted.filter(s => !granted.includes(s))
  if (extra.length > 0) return { ok: false, description: 'The requested scope exceeds what was granted' }
  return { ok: true, scopes: wanted }
}

/**
 * The scope a client may register: the scopes of a registration (RFC 7591) or a metadata document
 * that this server grants, once each; undefined when none is left (`openid profile` from a client
 * written for another server restricts nothing, as a client without `scope`).
 */
export function registeredScope (value: string, known: readonly string[]): string | undefined {
  const kept = [...new Set(value.split(' ').filter(s => known.includes(s)))]
  return kept.length > 0 ? kept.join(' ') : undefined
}

/**
 * RFC 7591 §2: the scope a client registered (static, dynamic or in its metadata document) is all it
 * may hold. A client that registered none may hold any supported scope. The one rule, used at the
 * authorization request, the code exchange and the refresh.
 */
export function clientMayHold (client: { scope?: string }, scope: string): boolean {
  return client.scope === undefined || client.scope.split(' ').includes(scope)
}

/** The given scopes, narrowed to what the client may hold (order kept). */
export function withinClient (scopes: readonly string[], client: { scope?: string }): string[] {
  return scopes.filter(s => clientMayHold(client, s))
}

/**
 * decideScopes for one client: defaults are narrowed to its registered scope; an explicit request
 * beyond it, or nothing left at all, is refused (invalid_scope).
 */
export function decideClientScopes (
  requested: string | undefined,
  supported: readonly string[],
  defaults: readonly string[],
  client: { scope?: string }
): ScopeDecision {
  const decision = decideScopes(requested, supported, withinClient(defaults, client))
  if (!decision.ok) return decision
  const outside = decision.scopes.filter(s => !clientMayHold(client, s))
  if (outside.length > 0) {
    return { ok: false, description: `This client is not registered for the scope: ${outside.slice(0, 5).join(' ')}`.slice(0, 200) }
  }
  if (decision.scopes.length === 0) {
    return { ok: false, description: 'None of the default scopes is registered for this client; request one of its registered scopes' }
  }
  return decision
}

/** The code exchange: a code whose scope the client no longer holds (RFC 7592 narrowed it) is refused. */
export function assertClientHolds (scopes: readonly string[], client: { scope?: string }): void {
  const outside = scopes.filter(s => !clientMayHold(client, s))
  if (outside.length > 0) {
    throw new OAuthError('invalid_scope', `This client is no longer registered for the scope: ${outside.slice(0, 5).join(' ')}`.slice(0, 200))
  }
}
