// Benchmark peer: the verify-and-forward code JTL's TypeScript guide has a backend write,
// with jose, as one Node process (as the guide's backend runs), in front of the backend.
//
//   node server.mjs session   PORT UPSTREAM BASE
//   node server.mjs app-token PORT UPSTREAM ISSUER AUDIENCE
//
// session:   JTL session tokens (EdDSA). Access token by client credentials (HTTP Basic)
//            from BASE/oauth2/token; the legacy key set from
//            BASE/account/.well-known/jwks.json with that bearer, in jose.createLocalJWKSet;
//            jwtVerify(token, jwks, {algorithms: ['EdDSA']}); tenantId / userId.
// app-token: JTL app tokens (RS256) from Zitadel: createRemoteJWKSet(ISSUER/oauth/v2/keys),
//            jwtVerify(token, JWKS, {issuer, audience, algorithms: ['RS256']}); tenant from
//            urn:jtl:tenant_id, user from sub; access token from ISSUER/oauth/v2/token
//            (scope openid).
// Forwards with node:http and a keep-alive Agent, adding X-Tenant-ID, X-User-ID and
// Authorization: Bearer <access token>; 401 JSON when verification fails.
// Client credentials: JTL_CLIENT_ID / JTL_CLIENT_SECRET (default: the emulator's).
import http from 'node:http';
import * as jose from 'jose';

const [mode, port, upstream, base, audience] = process.argv.slice(2);
if (!['session', 'app-token'].includes(mode) || !port || !upstream || !base || (mode === 'app-token' && !audience)) {
  console.error('usage: node server.mjs session PORT UPSTREAM BASE | app-token PORT UPSTREAM ISSUER AUDIENCE');
  process.exit(2);
}
const clientId = process.env.JTL_CLIENT_ID ?? 'emulated-client';
const clientSecret = process.env.JTL_CLIENT_SECRET ?? 'emulated-secret';

// RFC 6749 section 2.3.1: id and secret each form-urlencoded before the join (as the sidecar does).
const formEncode = (value) => new URLSearchParams({ v: value }).toString().slice(2);

async function accessToken(tokenUrl, form) {
  const basic = `${formEncode(clientId)}:${formEncode(clientSecret)}`;
  const res = await fetch(tokenUrl, {
    method: 'POST',
    headers: {
      Authorization: 'Basic ' + Buffer.from(basic).toString('base64'),
      'Content-Type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams(form),
  });
  if (!res.ok) throw new Error(`${tokenUrl}: ${res.status} ${await res.text()}`);
  return (await res.json()).access_token;
}

let verify; // (token) => Promise<{tenantId, userId}>
let token;
if (mode === 'session') {
  token = await accessToken(`${base}/oauth2/token`, { grant_type: 'client_credentials' });
  const res = await fetch(`${base}/account/.well-known/jwks.json`, { headers: { Authorization: `Bearer ${token}` } });
  if (!res.ok) throw new Error(`jwks: ${res.status}`);
  const jwks = jose.createLocalJWKSet(await res.json());
  verify = async (jwt) => {
    const { payload } = await jose.jwtVerify(jwt, jwks, { algorithms: ['EdDSA'] });
    return { tenantId: payload.tenantId, userId: payload.userId };
  };
} else {
  token = await accessToken(`${base}/oauth/v2/token`, { grant_type: 'client_credentials', scope: 'openid' });
  const JWKS = jose.createRemoteJWKSet(new URL(`${base}/oauth/v2/keys`));
  verify = async (jwt) => {
    const { payload } = await jose.jwtVerify(jwt, JWKS, { issuer: base, audience, algorithms: ['RS256'] });
    return { tenantId: payload['urn:jtl:tenant_id'], userId: payload.sub };
  };
}
const bearer = `Bearer ${token}`;
const target = new URL(upstream);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function unauthorized(res) {
  const body = JSON.stringify({ error: 'invalid_token' });
  res.writeHead(401, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer(async (req, res) => {
  const auth = req.headers.authorization;
  if (!auth || !auth.startsWith('Bearer ')) return unauthorized(res);
  let identity;
  try {
    identity = await verify(auth.slice(7));
  } catch {
    return unauthorized(res);
  }
  if (typeof identity.tenantId !== 'string' || typeof identity.userId !== 'string') return unauthorized(res);
  const headers = { ...req.headers, 'x-tenant-id': identity.tenantId, 'x-user-id': identity.userId, authorization: bearer };
  delete headers.host;
  delete headers.connection;
  const upstreamReq = http.request(
    { host: target.hostname, port: target.port, method: req.method, path: req.url, headers, agent },
    (upstreamRes) => {
      res.writeHead(upstreamRes.statusCode, upstreamRes.headers);
      upstreamRes.pipe(res);
    },
  );
  upstreamReq.on('error', () => {
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  req.pipe(upstreamReq);
});
server.keepAliveTimeout = 65_000;
server.listen(Number(port), '127.0.0.1', () => console.error(`peer-node-jose ${mode} listening on 127.0.0.1:${port} (one process)`));
