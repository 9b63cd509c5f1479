import { isIP } from 'node:net'

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

/**
 * Private, loopback, link-local, unique-local, CGNAT and other special-use addresses (IPv4 and
 * IPv6, IPv4-mapped included), plus names that only resolve locally.
 */
export function isPrivateHost (hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase()
  if (host === 'localhost' || host.endsWith('.localhost') || host.endsWith('.local') || host.endsWith('.internal')) return true
  return isIP(host) !== 0 && isForbiddenAddress(host)
}

export function isSpecialIPv4 (ip: string): boolean {
  const parts = ip.split('.').map(Number)
  const [a, b] = parts as [number, number, number, number]
  return a === 0 || a === 10 || a === 127 || a >= 224 ||
    (a === 100 && b >= 64 && b <= 127) ||
    (a === 169 && b === 254) ||
    (a === 172 && b >= 16 && b <= 31) ||
    (a === 192 && b === 168) ||
    (a === 192 && b === 0 && (parts[2] === 0 || parts[2] === 2)) ||
    (a === 198 && (b === 18 || b === 19)) ||
    (a === 198 && b === 51 && parts[2] === 100) ||
    (a === 203 && b === 0 && parts[2] === 113)
}

export function isSpecialIPv6 (ip: string): boolean {
  const h = ip.toLowerCase()
  if (h === '::' || h === '::1') return true
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h)
  if (mapped !== null) return isSpecialIPv4(mapped[1] as string)
  if (/^::ffff:[0-9a-f]{1,4}:[0-9a-f]{1,4}$/.test(h)) {
    const [hi, lo] = h.slice(7).split(':').map(x => parseInt(x as string, 16)) as [number, number]
    return isSpecialIPv4(`${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`)
  }
  const first = parseInt(h.split(':')[0] || '0', 16)
  return (first & 0xfe00) === 0xfc00 || // fc00::/7 unique local
    (first & 0xffc0) === 0xfe80 || // fe80::/10 link-local
    (first & 0xffc0) === 0xfec0 || // fec0::/10 site-local (deprecated)
    (first & 0xff00) === 0xff00 || // multicast
    h.startsWith('64:ff9b:') || // NAT64
    h.startsWith('2001:db8:') || // documentation
    h.startsWith('2001:0:') || h.startsWith('2002:') // Teredo, 6to4
}

/**
 * An address no redirect may point at and the metadata fetcher never connects to. Builds on the
 * prefix checks below and also catches IPv6 spellings that prefix tests miss (uncompressed zeros,
 * IPv4-compatible and IPv4-translated forms, zone ids) and a few more special-use blocks.
 */
export function isForbiddenAddress (address: string): boolean {
  const family = isIP(address)
  if (family === 4) return isSpecialIPv4(address)
  if (family !== 6 || address.includes('%')) return true
  if (isSpecialIPv6(address)) return true
  const [h0, h1, h2, h3, h4, h5, h6, h7] = ipv6Groups(address) as [number, number, number, number, number, number, number, number]
  if (h0 === 0 && h1 === 0 && h2 === 0 && h3 === 0 && h4 === 0 && h5 === 0xffff) {
    return isSpecialIPv4(`${h6 >> 8}.${h6 & 255}.${h7 >> 8}.${h7 & 255}`) // IPv4-mapped
  }
  return h0 < 0x0100 || // ::/8: unspecified, loopback, IPv4-compatible, IPv4-translated
    (h0 === 0x0100 && h1 === 0 && h2 === 0 && h3 === 0) || // 100::/64 discard
    (h0 === 0x0064 && h1 === 0xff9b) || // NAT64
    (h0 === 0x2001 && h1 < 0x0200) || // 2001::/23 IETF protocol assignments (Teredo, ORCHID, ...)
    (h0 === 0x2001 && h1 === 0x0db8) || // documentation
    (h0 === 0x3fff && h1 < 0x1000) || // 3fff::/20 documentation
    h0 === 0x2002 || // 6to4
    (h0 & 0xfe00) === 0xfc00 || (h0 & 0xffc0) === 0xfe80 || (h0 & 0xffc0) === 0xfec0 || (h0 & 0xff00) === 0xff00
}

/** The eight 16-bit groups of an address that isIP() accepted as IPv6 (no zone id). */
function ipv6Groups (address: string): number[] {
  let text = address.toLowerCase()
  const tail: number[] = []
  const dotted = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  if (dotted !== null) {
    const [a, b, c, d] = dotted.slice(2).map(Number) as [number, number, number, number]
    tail.push((a << 8) | b, (c << 8) | d)
    const prefix = dotted[1] as string
    text = prefix.endsWith('::') ? prefix : prefix.slice(0, -1)
  }
  const [head = '', rear] = text.split('::')
  const parse = (part: string): number[] => part === '' ? [] : part.split(':').map(g => parseInt(g, 16))
  const front = parse(head)
  const back = rear === undefined ? [] : parse(rear)
  return [...front, ...new Array<number>(8 - tail.length - front.length - back.length).fill(0), ...back, ...tail]
}
