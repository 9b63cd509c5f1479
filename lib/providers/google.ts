/**
 * Google as the upstream identity provider: the generic OpenID Connect provider pointed at
 * https://accounts.google.com, asking for offline access (a refresh token) and enforcing
 * Google-specific policy on the verified ID token: a verified e-mail address and, optionally,
 * membership of one or more Google Workspace domains (the `hd` claim).
 */

import { oidcProvider, type MapUser, type OidcProviderOptions } from './oidc.js'
import { errors, UpstreamError } from '../errors.js'
import type { Provider } from './types.js'

export const GOOGLE_ISSUER = 'https://accounts.google.com'

export interface GoogleProviderOptions {
  clientId: string
  clientSecret: string
  /** Default `['openid', 'email', 'profile']`. Without `email` every login is refused. */
  scopes?: string[]
  /**
   * Google Workspace domain(s) users must belong to, or '*' for any Workspace account (no
   * consumer accounts). The `hd` claim of the verified ID token is checked; the `hd` request
   * parameter is only a hint to Google's account chooser.
   */
  hostedDomain?: string | string[]
  /** Bound for every upstream request, in milliseconds. Default 10000. */
  timeoutMs?: number
  /** Extra authorization request parameters; `access_type=offline` and `prompt=consent` are defaults. */
  authorizationParams?: Record<string, string>
  /** Provider name. Default 'google'. */
  name?: string
  /** Issuer override, for tests against a local OpenID provider. Default https://accounts.google.com. */
  issuer?: string | URL
  allowInsecureHttp?: boolean
  customFetch?: OidcProviderOptions['customFetch']
  /** Runs after the Google checks passed; see {@link MapUser}. */
  mapUser?: MapUser
}

export function googleProvider (opts: GoogleProviderOptions): Provider {
  const name = opts.name ?? 'google'
  const domains = [opts.hostedDomain ?? []].flat().map((domain) => domain.trim().toLowerCase())
  if (domains.some((domain) => domain === '')) throw new errors.PROVIDER_OPTION(name, 'hostedDomain cannot be empty')

  // Google needs prompt=consent to hand out a refresh token on every authorization, not only the first.
  const authorizationParams: Record<string, string> = {
    access_type: 'offline',
    prompt: 'consent',
    ...opts.authorizationParams
  }
  delete authorizationParams.hd
  // One domain preselects it in the account chooser; '*' limits the chooser to Workspace accounts.
  const anyDomain = domains.includes('*')
  if (domains.length === 1) authorizationParams.hd = domains[0] as string
  else if (domains.length > 1) authorizationParams.hd = '*'

  const mapUser: MapUser = async (claims, user) => {
    if (claims.email_verified !== true) {
      throw new UpstreamError(name, 'not_allowed', `${name}: the account has no verified e-mail address`)
    }
    if (domains.length > 0) {
      const hd = typeof claims.hd === 'string' ? claims.hd.toLowerCase() : undefined
      if (hd === undefined || hd === '' || !(anyDomain || domains.includes(hd))) {
        throw new UpstreamError(name, 'not_allowed', `${name}: the account is not in an allowed hosted domain`)
      }
    }
    return opts.mapUser === undefined ? user : await opts.mapUser(claims, user)
  }

  const oidcOptions: OidcProviderOptions = {
    name,
    issuer: opts.issuer ?? GOOGLE_ISSUER,
    clientId: opts.clientId,
    clientSecret: opts.clientSecret,
    authorizationParams,
    // Policy is checked on the ID token alone; Google puts every claim we need there.
    userInfo: 'never',
    // Google's way to a refresh token is access_type=offline above, not the offline_access scope.
    offlineAccess: false,
    mapUser
  }
  if (opts.scopes !== undefined) oidcOptions.scopes = opts.scopes
  if (opts.timeoutMs !== undefined) oidcOptions.timeoutMs = opts.timeoutMs
  if (opts.allowInsecureHttp !== undefined) oidcOptions.allowInsecureHttp = opts.allowInsecureHttp
  if (opts.customFetch !== undefined) oidcOptions.customFetch = opts.customFetch
  // Refresh keeps the stored refresh token when Google sends none (the generic provider does that).
  return oidcProvider(oidcOptions)
}
