import type {} from '@fastify/cookie'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { ResolvedConfig } from '../options/index.js'
import type { Signer } from '../security/signing.js'

export interface CookieNames {
  csrf: string
  consent: string
}

/** `__Host-` names when the issuer is https: bound to this host, Secure, Path=/ (RFC 6265bis). */
export function cookieNames (config: ResolvedConfig): CookieNames {
  const prefix = config.secureCookies ? '__Host-' : ''
  return { csrf: `${prefix}mcp-oauth-csrf`, consent: `${prefix}mcp-oauth-consent` }
}

/** The approval cookie: the browser's binding secret and the clients it approved. */
export interface ConsentCookie {
  /** Binding secret; its hash is stored with each flow this browser starts. */
  b: string
  /** Approvals (client, resource and scopes; see Consent.approve), most recent first. */
  c: string[]
}

export function readConsent (request: FastifyRequest, signer: Signer, names: CookieNames, now: number): ConsentCookie | null {
  const value = signer.unsign<ConsentCookie & { exp: number }>('consent', request.cookies[names.consent])
  if (value === null || typeof value.b !== 'string' || !Array.isArray(value.c) || typeof value.exp !== 'number' || value.exp <= now) return null
  return { b: value.b, c: value.c.filter((c): c is string => typeof c === 'string') }
}

export function writeConsent (reply: FastifyReply, signer: Signer, names: CookieNames, config: ResolvedConfig, value: ConsentCookie, now: number): void {
  const days = config.consent.rememberDays
  // With rememberDays 0 the approval lasts for this sign-in only; the binding still needs the cookie.
  const lifetime = days > 0 ? days * 86400 : config.ttl.flow
  reply.setCookie(names.consent, signer.sign('consent', { ...value, c: days > 0 ? value.c : [], exp: now + lifetime * 1000 }), {
    path: '/', httpOnly: true, secure: config.secureCookies, sameSite: 'lax', maxAge: lifetime
  })
}
