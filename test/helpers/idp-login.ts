/**
 * Logs a user in at an OpenID provider (the example's development IdP) as a given client, the
 * way an enterprise app signs its users on: code flow with PKCE through the scripted browser,
 * then the code exchange. Returns the ID token the app keeps (the subject token of a Cross App
 * Access token exchange) and the subject the login named.
 *
 *   const { idToken, sub } = await idpLogin({ issuer: idp.issuer, clientId: 'wiki', clientSecret: 'wiki-secret', redirectUri, user: 'ann' })
 */
import { randomBytes } from 'node:crypto'
import { oidcProvider } from '../../lib/providers/oidc.js'
import { Browser } from './browser.js'

export interface IdpLoginOptions {
  issuer: string
  clientId: string
  clientSecret: string
  /** A redirect URI registered for the client; nothing needs to listen there. */
  redirectUri: string
  /** The login name typed into the IdP's form. */
  user: string
}

export async function idpLogin (opts: IdpLoginOptions): Promise<{ idToken: string, sub: string }> {
  const provider = oidcProvider({ issuer: opts.issuer, clientId: opts.clientId, clientSecret: opts.clientSecret, timeoutMs: 5000 })
  const random = (): string => randomBytes(32).toString('base64url')
  const flow = { state: random(), nonce: random(), codeVerifier: random(), redirectUri: opts.redirectUri }
  const page = await new Browser().drive(await provider.authorizationUrl(flow), {
    stopAt: (url) => url.href.startsWith(opts.redirectUri),
    fields: { login: opts.user, password: 'any' }
  })
  if (page.stoppedAt === undefined) throw new Error(`the login of ${opts.user} did not come back to ${opts.redirectUri}`)
  const { tokens, user } = await provider.exchangeCode({ ...flow, callbackUrl: page.stoppedAt })
  if (tokens.idToken === undefined) throw new Error('the IdP sent no ID token')
  return { idToken: tokens.idToken, sub: user.id }
}
