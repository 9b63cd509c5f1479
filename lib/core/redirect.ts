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

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost'])

function loopbackParts (uri: string): { host: string, rest: string } | null {
  let url: URL
  try {
    url = new URL(uri)
  } catch {
    return null
  }
  if (url.protocol !== 'http:' || !LOOPBACK_HOSTS.has(url.hostname) || url.username !== '' || url.password !== '' || url.hash !== '') return null
  return { host: url.hostname, rest: url.pathname + url.search }
}

export function isLoopbackRedirect (uri: string): boolean {
  return loopbackParts(uri) !== null
}
