// OpenID Provider test fixture for gatehouse's end-to-end tests.
//
// Usage: node tests/op/server.mjs --redirect-base http://127.0.0.1:10000
//          [--port N] [--name X] [--claims-in-id-token]
//
// Prints exactly one line to stdout, `ready http://127.0.0.1:PORT`, once it is
// listening; everything else goes to stderr. Exits when stdin closes, or on
// SIGTERM/SIGINT. See README.md next to this file for the full interface.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

// stdout carries only the "ready" line: route every console method that
// would write to stdout (oidc-provider prints NOTICEs via console.info) to
// stderr *before* oidc-provider is loaded.
const toStderr = (...args) => console.error(...args);
console.log = toStderr;
console.info = toStderr;
console.debug = toStderr;
console.trace = toStderr;
process.stdout.on('error', () => {}); // reader went away: nothing to do

const log = (...args) => console.error('[op]', ...args);

// ---------------------------------------------------------------- arguments

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      'redirect-base': { type: 'string' },
      port: { type: 'string', default: '0' },
      name: { type: 'string', default: 'test-op' },
      'claims-in-id-token': { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (err) {
  console.error(`usage error: ${err.message}`);
  process.exit(2);
}

if (!args['redirect-base']) {
  console.error('usage: node server.mjs --redirect-base URL [--port N] [--name X] [--claims-in-id-token]');
  process.exit(2);
}
const REDIRECT_BASE = args['redirect-base'].replace(/\/+$/, '');
try {
  new URL(REDIRECT_BASE); // eslint-disable-line no-new
} catch {
  console.error(`--redirect-base is not a URL: ${REDIRECT_BASE}`);
  process.exit(2);
}
const PORT = Number(args.port);
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) {
  console.error(`--port must be an integer 0..65535, got ${args.port}`);
  process.exit(2);
}
const NAME = args.name;
const CLAIMS_IN_ID_TOKEN = args['claims-in-id-token'];

// ---------------------------------------------------------------- lifetime

function shutdown(reason) {
  log(`exiting: ${reason}`);
  process.exit(0);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
process.stdin.on('end', () => shutdown('stdin closed'));
process.stdin.on('close', () => shutdown('stdin closed'));
process.stdin.on('error', () => shutdown('stdin error'));
process.stdin.resume(); // discard whatever is written; we only wait for EOF

// Loaded only now, so that its import-time console output is already
// redirected (static imports would run before the lines above).
// oidc-provider warns at import time that it only supports Node.js >= 22
// LTS; it runs fine on 20 for what this fixture needs, so drop that line.
const { warn } = console;
console.warn = (...a) => { if (!String(a[0]).includes('Unsupported runtime')) warn(...a); };
const { default: Provider, interactionPolicy } = await import('oidc-provider');
console.warn = warn;
const { SignJWT, decodeJwt, decodeProtectedHeader } = await import('jose');

/** The ACR values the OP advertises; a login defaults to ACR_PWD. */
const ACR_PWD = 'urn:gatehouse:pwd';
const ACR_MFA = 'urn:gatehouse:mfa';
const DEFAULT_AMR = ['pwd'];
const BACKCHANNEL_LOGOUT_EVENT = 'http://schemas.openid.net/event/backchannel-logout';

// ---------------------------------------------------------------- accounts

/** sub -> claims (sub included). Predefined accounts plus ones made at login. */
const accounts = new Map();
function defineAccount(claims) {
  accounts.set(claims.sub, claims);
}
defineAccount({
  sub: 'alice', email: 'alice@acme.test', email_verified: true, name: 'Alice Acme', groups: ['engineering'],
});
defineAccount({ sub: 'bob', email: 'bob@acme.test', email_verified: false, name: 'Bob Acme' });
defineAccount({ sub: 'carol', email: 'carol@globex.test', email_verified: true, name: 'Carol Globex' });
defineAccount({ sub: 'dave', email: 'dave@globex.test', email_verified: false, name: 'Dave Globex' });
defineAccount({ sub: 'mallory-aud', email: 'mallory@acme.test', email_verified: true, name: 'Mallory Audience' });
defineAccount({ sub: 'mallory-nonce', email: 'mallory@acme.test', email_verified: true, name: 'Mallory Nonce' });
const PREDEFINED = [...accounts.keys()];

/** ID token rewrites applied after the /token endpoint, by sub. */
const ID_TOKEN_REWRITES = {
  'mallory-aud': (payload) => ({ ...payload, aud: 'someone-else' }),
  'mallory-nonce': (payload) => ({ ...payload, nonce: 'not-the-nonce' }),
};

// ---------------------------------------------------------------- keys

/** Signing keys, newest first. Each: { kid, privateJwk, keyObject }. */
const signingKeys = [];
function newSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = `op-${crypto.randomBytes(6).toString('hex')}`;
  const privateJwk = { ...privateKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  const key = { kid, privateJwk, keyObject: privateKey };
  signingKeys.unshift(key);
  return key;
}

// ---------------------------------------------------------------- storage

// One in-memory store shared by every Provider instance this process builds
// (a key rotation builds a new one), so sessions, interactions, codes,
// grants and tokens survive a rotation.
const store = new Map(); // key -> { value, exp (ms epoch) | undefined }
const grantMembers = new Map(); // grantId -> Set(keys)
const GRANTABLE = new Set(['AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'PreAuthorizedCode']);

function storeGet(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.exp !== undefined && entry.exp <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry.value;
}
function storeSet(key, value, expiresIn) {
  const exp = typeof expiresIn === 'number' ? Date.now() + (expiresIn + 15) * 1000 : undefined;
  store.set(key, { value, exp });
}
setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of store) if (entry.exp !== undefined && entry.exp <= now) store.delete(key);
}, 60_000).unref();

class SharedMemoryAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    if (this.model === 'Session') storeSet(`sessionUid:${payload.uid}`, id, expiresIn);
    if (payload.userCode) storeSet(`userCode:${payload.userCode}`, id, expiresIn);
    if (GRANTABLE.has(this.model) && payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
    storeSet(key, payload, expiresIn);
  }

  async find(id) { return storeGet(this.key(id)); }

  async findByUid(uid) {
    const id = storeGet(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = storeGet(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = storeGet(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  async revokeByGrantId(grantId) {
    for (const key of grantMembers.get(grantId) ?? []) store.delete(key);
    grantMembers.delete(grantId);
  }
}

// ---------------------------------------------------------------- html

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

function page(title, body) {
  return `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body>
${body}
</body>
</html>
`;
}

// ---------------------------------------------------------------- provider

let ISSUER; // set once listening
let provider; // the current Provider (replaced on key rotation)
let providerHandler; // provider.callback()

function installProvider() {
  provider = buildProvider();
  providerHandler = provider.callback();
}

function buildProvider() {
  const clients = [
    ['gh-query', 'gh-query-secret'],
    ['gh-form', 'gh-form-secret'],
    ['other-client', 'other-secret'],
  ].map(([clientId, secret]) => ({
    client_id: clientId,
    client_secret: secret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [`${REDIRECT_BASE}/auth/callback`],
    post_logout_redirect_uris: [`${REDIRECT_BASE}/`],
    id_token_signed_response_alg: 'RS256',
    // Back-channel logout: ending the OP session POSTs a logout_token here.
    // session_required also makes ID tokens carry `sid`.
    backchannel_logout_uri: `${REDIRECT_BASE}/auth/backchannel-logout`,
    backchannel_logout_session_required: true,
  }));

  // The login prompt also asks again when the authorization request has
  // acr_values and the OP session's acr is none of them (oidc-provider itself
  // treats acr_values as voluntary and never re-prompts for them). A login
  // just made in this interaction satisfies it, whatever its acr, so a
  // password-only answer to an MFA request reaches the RP as such.
  const { Check, base } = interactionPolicy;
  const policy = base();
  policy.get('login').checks.add(new Check('acr_values', 'requested ACR could not be obtained', 'login_required', (ctx) => {
    const { oidc } = ctx;
    const wanted = (oidc.params.acr_values ?? '').split(' ').filter(Boolean);
    if (!wanted.length || !oidc.session.accountId || oidc.result?.login) return Check.NO_NEED_TO_PROMPT;
    return wanted.includes(oidc.acr) ? Check.NO_NEED_TO_PROMPT : Check.REQUEST_PROMPT;
  }, ({ oidc }) => ({ acr_values: oidc.params.acr_values })));

  const p = new Provider(ISSUER, {
    adapter: SharedMemoryAdapter,
    clients,
    jwks: { keys: signingKeys.map((k) => k.privateJwk) }, // newest first: signs with [0]
    cookies: {
      keys: ['gatehouse-test-op-cookie-key-1', 'gatehouse-test-op-cookie-key-0'],
    },
    scopes: ['openid', 'email', 'profile', 'groups'],
    acrValues: [ACR_PWD, ACR_MFA], // discovery: acr_values_supported
    claims: {
      acr: null,
      amr: null,
      auth_time: null,
      iss: null,
      sid: null,
      // acr, amr and auth_time ride on the openid scope so that every ID
      // token carries them (oidc-provider otherwise emits acr only for
      // acr_values requests, auth_time only for max_age / prompt=login, and
      // amr never, as the claims parameter is off). Userinfo never has them:
      // they are not account claims.
      openid: ['sub', 'acr', 'amr', 'auth_time'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    conformIdTokenClaims: !CLAIMS_IN_ID_TOKEN,
    allowOmittingSingleRegisteredRedirectUri: false,
    pkce: { required: () => true }, // S256 is the only method oidc-provider supports
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 3600,
      Session: 24 * 3600,
      Grant: 24 * 3600,
      RefreshToken: 24 * 3600,
      ClientCredentials: 600,
      DeviceCode: 600,
      BackchannelAuthenticationRequest: 600,
      PreAuthorizedCode: 600,
    },
    features: {
      devInteractions: { enabled: false },
      userinfo: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource,
        postLogoutSuccessSource,
      },
      backchannelLogout: { enabled: true },
    },
    // oidc-provider's outgoing requests refuse loopback and private
    // addresses (SSRF protection); the RP under test lives on 127.0.0.1, so
    // drop that dispatcher. The 2.5 s timeout signal stays.
    fetch: (url, options) => {
      const { dispatcher, ...rest } = options; // eslint-disable-line no-unused-vars
      return globalThis.fetch(url, rest);
    },
    interactions: {
      policy,
      url: (ctx, interaction) => `/interaction/${interaction.uid}`,
    },
    clientBasedCORS: () => true,
    renderError,
    async findAccount(ctx, sub) {
      const claims = accounts.get(sub);
      if (!claims) return undefined;
      return {
        accountId: sub,
        // oidc-provider filters these by the granted scopes / claims config.
        async claims() { return { ...claims }; },
      };
    },
  });

  p.on('server_error', (ctx, err) => log('server_error', err));
  p.on('grant.error', (ctx, err) => log('grant.error', err.message, err.error_description ?? ''));
  p.on('authorization.error', (ctx, err) => log('authorization.error', err.message, err.error_description ?? ''));
  p.on('end_session.error', (ctx, err) => log('end_session.error', err.message, err.error_description ?? ''));
  p.on('userinfo.error', (ctx, err) => log('userinfo.error', err.message, err.error_description ?? ''));
  // A failed back-channel delivery never fails the logout itself.
  p.on('backchannel.error', (ctx, err, client, accountId, sid) => log(
    `backchannel.error client=${client.clientId} sub=${accountId} sid=${sid}:`,
    err.message, err.cause?.message ?? '',
  ));
  p.on('backchannel.success', (ctx, client, accountId, sid) => log(
    `backchannel.success client=${client.clientId} sub=${accountId} sid=${sid} -> ${client.backchannelLogoutUri}`,
  ));

  // Rewrite ID tokens of the special "mallory-*" accounts in /token
  // responses, re-signed with the key (kid) the OP itself used.
  p.use(async (ctx, next) => {
    await next();
    if (ctx.path !== '/token' || ctx.status !== 200) return;
    const body = ctx.body;
    if (!body || typeof body !== 'object' || Buffer.isBuffer(body) || typeof body.id_token !== 'string') return;
    const payload = decodeJwt(body.id_token);
    const rewrite = ID_TOKEN_REWRITES[payload.sub];
    if (!rewrite) return;
    const header = decodeProtectedHeader(body.id_token);
    const key = signingKeys.find((k) => k.kid === header.kid);
    if (!key) {
      log(`cannot rewrite id_token: unknown kid ${header.kid}`);
      return;
    }
    const idToken = await new SignJWT(rewrite(payload)).setProtectedHeader(header).sign(key.keyObject);
    log(`rewrote id_token for ${payload.sub}`);
    ctx.body = { ...body, id_token: idToken };
  });

  return p;
}

async function renderError(ctx, out, error) {
  log('renderError', out.error, out.error_description ?? '', error?.message ?? '');
  ctx.type = 'html';
  ctx.body = page(`${NAME} error`, `<h1>error</h1>
<p id="error">${esc(out.error)}</p>
<p id="error_description">${esc(out.error_description ?? '')}</p>`);
}

// RP-initiated logout confirmation: one form, auto-submitted, that POSTs
// xsrf + logout=yes (i.e. "sign out of the OP entirely").
async function logoutSource(ctx) {
  const { secret } = ctx.oidc.session.state;
  const action = ctx.oidc.urlFor('end_session_confirm');
  ctx.type = 'html';
  ctx.body = page(`${NAME} sign-out`, `<h1>Sign out of ${esc(NAME)}?</h1>
<form id="op.logoutForm" method="post" action="${esc(action)}"><input type="hidden" name="xsrf" value="${esc(secret)}"/><input type="hidden" name="logout" value="yes"/><button type="submit">Yes, sign me out</button></form>
<script>document.forms[0].submit()</script>`);
}

async function postLogoutSuccessSource(ctx) {
  ctx.type = 'html';
  ctx.body = page(`${NAME} signed out`, '<h1>Signed out</h1>');
}

// ---------------------------------------------------------------- fixture routes

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new HttpError(413, 'body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function readForm(req) {
  return new URLSearchParams(await readBody(req));
}

async function readJsonObject(req) {
  const text = await readBody(req);
  if (!text.trim()) return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new HttpError(400, `body is not JSON: ${err.message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new HttpError(400, 'body must be a JSON object');
  }
  return value;
}

function send(res, status, type, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

function loginPage(uid, details) {
  const action = `/interaction/${uid}/login`;
  const forms = PREDEFINED.map((sub) => {
    const a = accounts.get(sub);
    return `<form method="post" action="${action}"><input type="hidden" name="sub" value="${esc(sub)}"/><button type="submit">${esc(sub)} (${esc(a.email)})</button></form>`;
  }).join('\n');
  return page(`${NAME} sign-in`, `<h1>${esc(NAME)}: sign in to ${esc(details.params.client_id)}</h1>
<p id="prompt">${esc(details.prompt.name)}</p>
${forms}
<form id="custom" method="post" action="${action}"><input type="text" name="sub" value=""/><input type="text" name="email" value=""/><select name="email_verified"><option value="true">true</option><option value="false">false</option><option value="string-true">string-true</option><option value="string-false">string-false</option><option value="">(omit)</option></select><input type="text" name="name" value=""/><button type="submit">custom</button></form>
<form id="abort" method="post" action="/interaction/${uid}/abort"><button type="submit">cancel</button></form>`);
}

function newGrant(details, accountId) {
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  if (details.params.scope) grant.addOIDCScope(details.params.scope);
  const d = details.prompt?.details ?? {};
  if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
  if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  return grant.save();
}

const EMAIL_VERIFIED = {
  true: true, false: false, 'string-true': 'true', 'string-false': 'false',
};

/** A comma-separated form value as a list: items trimmed, empty ones dropped. */
const commaList = (value) => value.split(',').map((v) => v.trim()).filter(Boolean);

/**
 * The login's amr / acr from the form. Absent: the password-only defaults.
 * Present but empty: left out (the ID token then has no such claim).
 */
function authFromForm(form) {
  const amr = form.has('amr') ? commaList(form.get('amr')) : [...DEFAULT_AMR];
  const acr = form.has('acr') ? form.get('acr').trim() : ACR_PWD;
  return { amr: amr.length ? amr : undefined, acr: acr || undefined };
}

function accountFromForm(form) {
  const sub = (form.get('sub') ?? '').trim();
  if (!sub) throw new HttpError(400, 'sub is required');
  const custom = ['email', 'email_verified', 'name', 'groups'].some((k) => form.has(k));
  if (!custom) {
    if (!accounts.has(sub)) defineAccount({ sub });
    return sub;
  }
  // Free-form login: (re)define the account with exactly the non-empty claims.
  const claims = { sub };
  if (form.get('email')) claims.email = form.get('email');
  const ev = form.get('email_verified');
  if (ev) {
    if (!(ev in EMAIL_VERIFIED)) throw new HttpError(400, `bad email_verified: ${ev}`);
    claims.email_verified = EMAIL_VERIFIED[ev];
  }
  if (form.get('name')) claims.name = form.get('name');
  if (form.has('groups')) claims.groups = commaList(form.get('groups')); // present but empty: []
  defineAccount(claims);
  return sub;
}

async function fixtureRoute(req, res, url) {
  const m = url.pathname.match(/^\/interaction\/([^/]+)(?:\/(login|abort))?$/);
  if (m) {
    const [, uid, action] = m;
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) throw new HttpError(400, 'interaction uid does not match its cookie');

    if (!action) {
      if (req.method !== 'GET') throw new HttpError(405, 'method not allowed');
      if (details.prompt.name === 'consent' && details.session?.accountId) {
        // Already logged in at the OP: grant what was asked and carry on.
        const grantId = await newGrant(details, details.session.accountId);
        log(`interaction ${uid}: auto consent for ${details.session.accountId}`);
        await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: false });
        return;
      }
      send(res, 200, 'text/html; charset=utf-8', loginPage(uid, details));
      return;
    }

    if (req.method !== 'POST') throw new HttpError(405, 'method not allowed');
    const form = await readForm(req);
    if (action === 'abort') {
      await provider.interactionFinished(req, res, {
        error: 'access_denied', error_description: 'End-User aborted interaction',
      }, { mergeWithLastSubmission: false });
      return;
    }
    const sub = accountFromForm(form);
    const { amr, acr } = authFromForm(form);
    const grantId = await newGrant(details, sub);
    log(`interaction ${uid}: login ${sub} amr=${JSON.stringify(amr)} acr=${JSON.stringify(acr)} (${JSON.stringify(accounts.get(sub))})`);
    await provider.interactionFinished(req, res, {
      login: { accountId: sub, amr, acr },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
    return;
  }

  if (url.pathname === '/__control/rotate') {
    if (req.method !== 'POST') throw new HttpError(405, 'method not allowed');
    const key = newSigningKey();
    installProvider();
    log(`rotated signing key: now ${key.kid}; published ${signingKeys.map((k) => k.kid).join(', ')}`);
    send(res, 200, 'application/json', JSON.stringify({ kid: key.kid, kids: signingKeys.map((k) => k.kid) }));
    return;
  }

  if (url.pathname === '/__control/logout-token') {
    if (req.method !== 'POST') throw new HttpError(405, 'method not allowed');
    const body = await readJsonObject(req);
    const logoutToken = await craftLogoutToken(body);
    log(`crafted logout_token (forge: ${body.forge === true}): ${JSON.stringify(decodeJwt(logoutToken))}`);
    send(res, 200, 'application/json', JSON.stringify({ logout_token: logoutToken }));
    return;
  }

  throw new HttpError(404, 'not found');
}

/**
 * A back-channel logout token built from a /__control/logout-token body.
 * Fields the caller omits are left out, except these defaults; a null
 * value leaves a defaulted field out too.
 */
async function craftLogoutToken(body) {
  const iat = body.iat ?? Math.floor(Date.now() / 1000);
  const defaults = {
    iss: ISSUER,
    aud: 'gh-query',
    iat,
    exp: typeof iat === 'number' ? iat + 120 : undefined,
    jti: crypto.randomUUID(),
    events: { [BACKCHANNEL_LOGOUT_EVENT]: {} },
  };
  const payload = {};
  for (const claim of ['iss', 'aud', 'sub', 'sid', 'iat', 'exp', 'jti', 'nonce', 'events']) {
    const value = claim in body ? body[claim] : defaults[claim];
    if (value !== undefined && value !== null) payload[claim] = value;
  }
  const { kid } = signingKeys[0];
  let key = signingKeys[0].keyObject;
  if (body.forge === true) {
    // Same kid, but a key the JWKS has never published.
    ({ privateKey: key } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }));
  }
  return new SignJWT(payload).setProtectedHeader({ alg: 'RS256', kid, typ: 'logout+jwt' }).sign(key);
}

async function handle(req, res) {
  if (!provider) throw new HttpError(503, 'starting');
  const url = new URL(req.url, ISSUER);
  if (url.pathname.startsWith('/interaction/') || url.pathname.startsWith('/__control/')) {
    try {
      await fixtureRoute(req, res, url);
    } catch (err) {
      const status = err.status ?? 400;
      const msg = `${err.name}: ${err.error_description ?? err.message}`;
      log(`${req.method} ${url.pathname} -> ${status}: ${msg}`);
      if (!res.headersSent) send(res, status, 'text/plain; charset=utf-8', `${msg}\n`);
      else res.end();
    }
    return;
  }
  providerHandler(req, res);
}

// ---------------------------------------------------------------- start

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    log('unhandled', err);
    if (!res.headersSent) send(res, err.status ?? 500, 'text/plain', `${err.message}\n`);
  });
});
server.on('error', (err) => {
  console.error(`listen failed: ${err.message}`);
  process.exit(1);
});
server.listen(PORT, '127.0.0.1', () => {
  const { port } = server.address();
  ISSUER = `http://127.0.0.1:${port}`;
  newSigningKey();
  installProvider();
  log(`issuer ${ISSUER}, redirect base ${REDIRECT_BASE}, claims in id token: ${CLAIMS_IN_ID_TOKEN}`);
  process.stdout.write(`ready ${ISSUER}\n`);
});
