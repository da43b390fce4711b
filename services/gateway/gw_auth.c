/* gw_auth: JWT HS256 tokens (libjwt 1.x) and argon2id password hashes (libsodium).
 * Guarantees: a token verifies only when its header says HS256 (alg "none" or any other is
 * refused even though libjwt would accept it), its signature matches the secret, it carries an
 * exp in the future and a positive numeric sub; a verify never crashes on garbage. Password
 * hashes are crypto_pwhash_str with the INTERACTIVE limits, and at most GW_PWHASH_MAX of them
 * run at once: each takes 64 MiB, so 64 HTTP threads hashing together (a burst of logins, or
 * someone hammering /login) would otherwise ask for 4 GiB. The others wait their turn. */
#include "gw_auth.h"
#include <jwt.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <time.h>
#include <pthread.h>

/* Longer tokens are not ours; refusing them early bounds libjwt's work on hostile input. */
#define GW_TOKEN_MAX 4096

int gw_auth_verify(const char *secret, const char *token, gw_identity_t *out)
{
    if (!secret || !*secret || !token || !out)
        return -1;
    size_t tlen = strnlen(token, GW_TOKEN_MAX + 1);
    if (tlen == 0 || tlen > GW_TOKEN_MAX)
        return -1;
    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, (const unsigned char *) secret, (int) strlen(secret)) != 0 || !jwt)
        return -1;
    int rc = -1;
    if (jwt_get_alg(jwt) != JWT_ALG_HS256)
        goto done;
    errno = 0;
    long exp = jwt_get_grant_int(jwt, "exp");
    if (errno != 0 || exp <= 0 || (time_t) exp <= time(NULL))
        goto done;
    /* sub is a string per RFC 7519; it holds the decimal user id. */
    const char *sub = jwt_get_grant(jwt, "sub");
    if (!sub || !*sub || strlen(sub) > 18)
        goto done;
    int64_t uid = 0;
    for (const char *p = sub; *p; p++) {
        if (*p < '0' || *p > '9')
            goto done;
        uid = uid * 10 + (*p - '0');
    }
    if (uid <= 0)
        goto done;
    const char *name = jwt_get_grant(jwt, "name");
    memset(out, 0, sizeof *out);
    out->user_id = uid;
    snprintf(out->username, sizeof out->username, "%s", name ? name : "");
    errno = 0;
    int adm = jwt_get_grant_bool(jwt, "adm");
    out->admin = (errno == 0 && adm == 1);
    rc = 0;
done:
    jwt_free(jwt);
    return rc;
}

char *gw_auth_issue(const char *secret, int64_t ttl_s, const gw_identity_t *id)
{
    if (!secret || !*secret || !id || id->user_id <= 0 || ttl_s <= 0)
        return NULL;
    jwt_t *jwt = NULL;
    if (jwt_new(&jwt) != 0)
        return NULL;
    char *out = NULL;
    char sub[24];
    snprintf(sub, sizeof sub, "%lld", (long long) id->user_id);
    time_t now = time(NULL);
    if (jwt_add_grant(jwt, "sub", sub) == 0 &&
        jwt_add_grant(jwt, "name", id->username) == 0 &&
        jwt_add_grant_bool(jwt, "adm", id->admin ? 1 : 0) == 0 &&
        jwt_add_grant_int(jwt, "iat", (long) now) == 0 &&
        jwt_add_grant_int(jwt, "exp", (long) (now + ttl_s)) == 0 &&
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *) secret,
                    (int) strlen(secret)) == 0)
        out = jwt_encode_str(jwt);
    jwt_free(jwt);
    return out;
}

#define GW_PWHASH_MAX 4

static pthread_mutex_t s_slots_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t s_slots_cv = PTHREAD_COND_INITIALIZER;
static int s_slots_used;

static void s_slot_take(void)
{
    pthread_mutex_lock(&s_slots_mu);
    while (s_slots_used >= GW_PWHASH_MAX)
        pthread_cond_wait(&s_slots_cv, &s_slots_mu);
    s_slots_used++;
    pthread_mutex_unlock(&s_slots_mu);
}

static void s_slot_give(void)
{
    pthread_mutex_lock(&s_slots_mu);
    s_slots_used--;
    pthread_cond_signal(&s_slots_cv);
    pthread_mutex_unlock(&s_slots_mu);
}

int gw_password_hash(const char *password, char *out, size_t out_len)
{
    if (!password || !out || out_len < crypto_pwhash_STRBYTES)
        return -1;
    if (sodium_init() < 0)
        return -1;
    s_slot_take();
    int rc = crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                               crypto_pwhash_MEMLIMIT_INTERACTIVE);
    s_slot_give();
    return rc == 0 ? 0 : -1;
}

int gw_password_verify(const char *stored_hash, const char *password)
{
    if (!stored_hash || !password)
        return -1;
    if (sodium_init() < 0)
        return -1;
    /* crypto_pwhash_str_verify reads up to STRBYTES of the stored string: make sure it ends. */
    if (strnlen(stored_hash, crypto_pwhash_STRBYTES) >= crypto_pwhash_STRBYTES)
        return -1;
    s_slot_take();
    int rc = crypto_pwhash_str_verify(stored_hash, password, strlen(password));
    s_slot_give();
    return rc == 0 ? 0 : -1;
}
