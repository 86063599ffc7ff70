// A real, certified OpenID provider (panva/oidc-provider) for the commons-router tests.
// Usage: OP_PORT=... OP_CLIENTS='[...]' node provider.mjs
// Dev interactions accept any login/password; grants are given without a consent screen.
// Every user's claims derive from the login: "admin-x" is in the "admins" group.
import Provider from 'oidc-provider';

const port = Number(process.env.OP_PORT);
const issuer = `http://127.0.0.1:${port}`;
const clients = JSON.parse(process.env.OP_CLIENTS || '[]');
const counters = { authorization_code: 0, refresh_token: 0, backchannel_ok: 0, backchannel_error: 0 };
const SCOPES = 'openid offline_access email profile groups';

const configuration = {
  clients,
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  conformIdTokenClaims: false,
  cookies: { keys: ['commons-router-test-only'] },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
    revocation: { enabled: true },
  },
  pkce: { required: () => true },
  // Refresh tokens for every client allowed the grant (no consent prompt needed), rotated
  // on every use: a second use of the same refresh token is refused.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  ttl: {
    AccessToken: (ctx, token, client) => (client && client.clientId === 'short' ? 4 : 3600),
    IdToken: 3600,
    Session: 3600,
    Interaction: 600,
    Grant: 3600,
    RefreshToken: 3600,
    AuthorizationCode: 60,
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope(SCOPES);
    grant.addOIDCClaims(['email', 'email_verified', 'name', 'preferred_username', 'groups']);
    await grant.save();
    return grant;
  },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: id.includes('@') ? id : `${id}@example.org`,
          email_verified: true,
          name: id,
          preferred_username: id,
          groups: id.startsWith('admin') ? ['admins', 'staff'] : ['staff'],
        };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);
provider.on('grant.success', (ctx) => {
  const type = ctx.oidc.params.grant_type;
  counters[type] = (counters[type] || 0) + 1;
});
provider.on('backchannel.success', () => { counters.backchannel_ok += 1; });
provider.on('backchannel.error', (ctx, err) => {
  counters.backchannel_error += 1;
  console.error('backchannel error', err && err.message);
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));

provider.use(async (ctx, next) => {
  if (ctx.path === '/test/counters') {
    ctx.body = counters;
    return;
  }
  await next();
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
