/* gw_auth: who is calling. Passwords are stored as libsodium argon2id strings
 * (crypto_pwhash_str); tokens are JWT HS256 (libjwt) with sub = user id, name = username,
 * adm = admin flag, iat and exp. Verification checks the algorithm (HS256 only: a token with
 * alg "none" or any other is refused), the signature and exp. */
#ifndef GW_AUTH_H
#define GW_AUTH_H
#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    int64_t user_id;
    char    username[64];
    bool    admin;
} gw_identity_t;

/* Returns 0 and fills *out when token is valid and unexpired; -1 otherwise. */
int gw_auth_verify(const char *secret, const char *token, gw_identity_t *out);
/* A new token valid for ttl_s seconds. Caller frees with free(). NULL on failure. */
char *gw_auth_issue(const char *secret, int64_t ttl_s, const gw_identity_t *id);

/* out must hold crypto_pwhash_STRBYTES (128) bytes. 0 or -1 (out of memory). */
int gw_password_hash(const char *password, char *out, size_t out_len);
/* 0 when password matches the stored hash. */
int gw_password_verify(const char *stored_hash, const char *password);
#endif
