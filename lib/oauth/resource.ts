/** What a configured resource needs to be matched: its identifier as configured. */
export interface NamedResource {
  resource: string
}

/**
 * RFC 8707 resource indicators. Clients spell the same resource in different ways (scheme and host
 * case, a default port, a trailing slash); these compare equal. Returns the configured resource, or
 * null when the value names none of them.
 */
export function matchResource<R extends NamedResource> (value: string, resources: readonly R[]): R | null {
  // MCP clients send the resource on every authorization and token request, nearly always spelled
  // as configured: that needs no URL parsing.
  for (const r of resources) {
    if (r.resource === value && configuredKey(r) !== null) return r
  }
  const key = comparable(value)
  if (key === null) return null
  return resources.find(r => configuredKey(r) === key) ?? null
}

/** The comparable form of each configured resource, worked out once. */
const configuredKeys = new WeakMap<NamedResource, string | null>()

function configuredKey (resource: NamedResource): string | null {
  let key = configuredKeys.get(resource)
  if (key === undefined) {
    key = comparable(resource.resource)
    configuredKeys.set(resource, key)
  }
  return key
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

export type ResourceDecision<R> = { ok: true, resource: R } | { ok: false, description: string }

/**
 * The resource a token request without a browser leg is for (client credentials, jwt-bearer): the
 * one named, or the only one configured when none is named (clients often omit it).
 */
export function requestedResource<R extends NamedResource> (value: string | undefined, resources: readonly R[]): ResourceDecision<R> {
  if (value === undefined || value === '') {
    if (resources.length === 1) return { ok: true, resource: resources[0] as R }
    return { ok: false, description: 'resource is required: this server protects several resources' }
  }
  const match = matchResource(value, resources)
  return match === null ? { ok: false, description: 'The resource is not protected by this server' } : { ok: true, resource: match }
}
