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
  ignored: readonly string[] = ['offline_access']
): ScopeDecision {
  if (requested === undefined || requested.trim() === '') return { ok: true, scopes: [...defaults] }
  const wanted = [...new Set(requested.split(' ').filter(s => s !== ''))]
  const malformed = wanted.find(s => !SCOPE_TOKEN.test(s))
  if (malformed !== undefined) return { ok: false, description: 'The scope parameter is malformed' }
  const unknown = wanted.filter(s => !supported.includes(s) && !ignored.includes(s))
  if (unknown.length > 0) {
    return { ok: false, description: `Unsupported scope: ${unknown.slice(0, 5).join(' ')}`.slice(0, 200) }
  }
  const scopes = wanted.filter(s => supported.includes(s))
  return { ok: true, scopes: scopes.length > 0 ? scopes : [...defaults] }
}

/** For refresh: a requested scope may only narrow the grant. */
export function narrowScopes (requested: string | undefined, granted: readonly string[]): ScopeDecision {
  if (requested === undefined || requested.trim() === '') return { ok: true, scopes: [...granted] }
  const wanted = [...new Set(requested.split(' ').filter(s => s !== ''))]
  const extra = wanted.filter(s => !granted.includes(s))
  if (extra.length > 0) return { ok: false, description: 'The requested scope exceeds what was granted' }
  return { ok: true, scopes: wanted }
}
