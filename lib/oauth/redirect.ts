import { isPrivateHost } from './address.js'

/**
 * Redirect URI policy, one module for registration, client metadata documents and the
 * authorization endpoint.
 */

/** Never acceptable as a redirect, whatever the configuration. */
const FORBIDDEN_SCHEMES = new Set([
  'javascript', 'data', 'file', 'vbscript', 'about', 'blob', 'filesystem', 'view-source', 'ws', 'wss',
  'ftp', 'mailto', 'tel', 'sms', 'chrome', 'chrome-extension', 'resource', 'jar', 'intent'
])

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost'])

export interface RedirectPolicy {
  /** Allow plain http on non-loopback hosts (development only). */
  allowHttp: boolean
  /** Allow https redirects to private, link-local and other special-use addresses. */
  allowPrivateHosts: boolean
  /**
   * Private-use URI schemes for native apps, as patterns: an exact scheme ("cursor"), or "*.*" for
   * any reverse-domain scheme (RFC 8252 §7.1, e.g. com.example.app).
   */
  customSchemes: readonly string[]
}

export const DEFAULT_CUSTOM_SCHEMES = ['cursor', 'vscode', 'vscode-insiders', 'windsurf', 'zed', 'claude', '*.*'] as const

export type RedirectKind = 'https' | 'loopback' | 'http' | 'custom'

export type RedirectCheck =
  | { ok: true, kind: RedirectKind }
  | { ok: false, reason: string }

/** Is this URI acceptable as a redirect for a client at all? */
export function checkRedirectUri (uri: string, policy: RedirectPolicy): RedirectCheck {
  if (uri.length > 2000) return { ok: false, reason: 'is too long' }
  let url: URL
  try {
    url = new URL(uri)
  } catch {
    return { ok: false, reason: 'is not an absolute URI' }
  }
  const scheme = url.protocol.slice(0, -1).toLowerCase()
  if (FORBIDDEN_SCHEMES.has(scheme)) return { ok: false, reason: `uses the forbidden scheme "${scheme}:"` }
  if (uri.includes('#')) return { ok: false, reason: 'must not contain a fragment' }
  if (url.username !== '' || url.password !== '') return { ok: false, reason: 'must not contain user information' }
  if (scheme === 'https') {
    if (url.hostname === '') return { ok: false, reason: 'has no host' }
    if (!policy.allowPrivateHosts && isPrivateHost(url.hostname)) return { ok: false, reason: 'points at a private or special-use address' }
    return { ok: true, kind: 'https' }
  }
  if (scheme === 'http') {
    if (LOOPBACK_HOSTS.has(url.hostname)) return { ok: true, kind: 'loopback' }
    if (!policy.allowHttp) return { ok: false, reason: 'uses http on a non-loopback host (https is required)' }
    return { ok: true, kind: 'http' }
  }
  if (!/^[a-z][a-z0-9+.-]*$/.test(scheme)) return { ok: false, reason: 'has an invalid scheme' }
  const allowed = policy.customSchemes.some(p => p === scheme || (p === '*.*' && scheme.includes('.')))
  if (!allowed) return { ok: false, reason: `uses the scheme "${scheme}:", which is not allowed here` }
  return { ok: true, kind: 'custom' }
}

/**
 * Redirect URI matching at the authorization endpoint: exact string match, except that a loopback
 * redirect over http matches on any port (RFC 8252 §7.3), since native apps bind an ephemeral one.
 */
export function matchRedirectUri (registered: readonly string[], requested: string): boolean {
  if (registered.includes(requested)) return true
  const wanted = loopbackParts(requested)
  if (wanted === null) return false
  return registered.some(r => {
    const have = loopbackParts(r)
    return have !== null && have.host === wanted.host && have.rest === wanted.rest
  })
}

function loopbackParts (uri: string): { host: string, rest: string } | null {
  let url: URL
  try {
    url = new URL(uri)
  } catch {
    return null
  }
  if (url.protocol !== 'http:' || !LOOPBACK_HOSTS.has(url.hostname) || url.username !== '' || url.password !== '' || uri.includes('#')) return null
  return { host: url.hostname, rest: url.pathname + url.search }
}

export function isLoopbackRedirect (uri: string): boolean {
  return loopbackParts(uri) !== null
}
