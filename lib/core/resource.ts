import type { ResolvedResource } from '../options.js'

/**
 * RFC 8707 resource indicators. Clients spell the same resource in different ways (scheme and host
 * case, a default port, a trailing slash); these compare equal. Returns the configured resource, or
 * null when the value names none of them.
 */
export function matchResource (value: string, resources: ResolvedResource[]): ResolvedResource | null {
  const key = comparable(value)
  if (key === null) return null
  return resources.find(r => comparable(r.resource) === key) ?? null
}

function comparable (value: string): string | null {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return null
  }
  if (url.hash !== '' || value.includes('#')) return null
  const path = url.pathname.length > 1 && url.pathname.endsWith('/') ? url.pathname.slice(0, -1) : url.pathname
  return `${url.protocol}//${url.host}${path}${url.search}`
}
