import Type from 'typebox'

/**
 * RFC 6749 §5.2: the body of every JSON error of the OAuth scope. The scope puts it on each route's
 * 4xx and 5xx responses (unless the route declares its own), so one schema documents and serialises them.
 */
export const OAuthErrorResponse = Type.Object({
  error: Type.String(),
  error_description: Type.Optional(Type.String())
})
