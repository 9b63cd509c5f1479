import { OAuthError, type OAuthErrorCode } from '../errors.js'
import type { PkceMethod } from '../oauth/pkce.js'

/** An authorization request that passed every check; what the consent page shows and signs. */
export interface ValidatedAuthorization {
  clientId: string
  redirectUri: string
  state?: string
  codeChallenge: string
  codeChallengeMethod: PkceMethod
  scopes: string[]
  resource: string
}

/** Where the authorization response goes, once the client's redirect URI is established. */
export interface ResponseTarget {
  redirectUri: string
  state?: string
}

/** Add OAuth response parameters to a redirect URI, keeping its own query (RFC 6749 §3.1.2). */
export function clientRedirect (redirectUri: string, params: Record<string, string | undefined>): string {
  const url = new URL(redirectUri)
  for (const [k, v] of Object.entries(params)) if (v !== undefined) url.searchParams.set(k, v)
  return url.href
}

/** The error response at the client's redirect URI, with its state and our issuer (RFC 9207). */
export function errorRedirect (target: ResponseTarget, issuer: string, error: OAuthErrorCode, description: string): string {
  return clientRedirect(target.redirectUri, { error, error_description: description, state: target.state, iss: issuer })
}

/** An error that may go back to the client: it carries the redirect that delivers it. */
export function redirectableError (target: ResponseTarget, issuer: string, error: OAuthErrorCode, description: string): OAuthError {
  return new OAuthError(error, description, { redirect: errorRedirect(target, issuer, error, description) })
}
