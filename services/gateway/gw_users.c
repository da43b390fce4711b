/* gw_users: registration and login.
 * Guarantees: passwords are stored only as argon2id strings; login answers the same 401 with
 * the same message for an unknown user and a wrong password, and runs one hash verification
 * in both cases (against a dummy hash for an unknown user) so its timing tells nothing either. */
#include "gw_routes.h"
#include "gw_server.h"
#include "qv_log.h"
#include <sodium.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define USERNAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"

static char s_dummy_hash[crypto_pwhash_STRBYTES];
static pthread_once_t s_dummy_once = PTHREAD_ONCE_INIT;

static void s_make_dummy(void)
{
    char pw[33];
    unsigned char rnd[16];
    if (sodium_init() < 0)
        return;
    randombytes_buf(rnd, sizeof rnd);
    sodium_bin2hex(pw, sizeof pw, rnd, sizeof rnd);
    if (gw_password_hash(pw, s_dummy_hash, sizeof s_dummy_hash) != 0)
        s_dummy_hash[0] = '\0';
}

void gw_users_warmup(void)
{
    pthread_once(&s_dummy_once, s_make_dummy);
}

int gw_h_register(gw_req_t *req)
{
    json_t *body = gw_read_json(req);
    if (!body)
        return req->status;
    const char *username, *email, *password;
    if (gw_json_string(req, body, "username", 3, 32, USERNAME_CHARS, &username) != 0 ||
        gw_json_string(req, body, "email", 3, 254, NULL, &email) != 0 ||
        gw_json_string(req, body, "password", 8, 128, NULL, &password) != 0)
        goto out;
    const char *at = strchr(email, '@');
    if (!at || at == email || at[1] == '\0' || strchr(at + 1, '@') || strchr(email, ' ')) {
        gw_send_error(req, 400, NULL, "field 'email' must be an address like name@example.org");
        goto out;
    }
    char hash[crypto_pwhash_STRBYTES];
    if (gw_password_hash(password, hash, sizeof hash) != 0) {
        gw_send_error(req, 500, NULL, "could not hash the password");
        goto out;
    }
    const char *params[] = { username, email, hash };
    qv_result_t res;
    Quaver__V1__Value vals[3];
    Quaver__V1__Value *ptrs[3];
    for (int i = 0; i < 3; i++) {
        quaver__v1__value__init(&vals[i]);
        vals[i].text = (char *) params[i];
        ptrs[i] = &vals[i];
    }
    Quaver__V1__QueryRequest q = QUAVER__V1__QUERY_REQUEST__INIT;
    q.name = "user_create";
    q.n_params = 3;
    q.params = ptrs;
    /* Called directly rather than through gw_db: a 409 here must say which field is taken. */
    int st = gw_call(req, "dbopt", "Exec", &q.base, 0, &res);
    if (st == 409) {
        bool email_taken = res.error && strstr(res.error, "email");
        gw_send_error(req, 409, NULL, "%s", email_taken ? "email already registered"
                                                        : "username already taken");
        qv_result_free(&res);
        goto out;
    }
    if (st < 200 || st >= 300) {
        gw_send_call_error(req, "dbopt", &res, NULL);
        qv_result_free(&res);
        goto out;
    }
    Quaver__V1__QueryReply *r = quaver__v1__query_reply__unpack(NULL, res.len, res.payload);
    qv_result_free(&res);
    if (!r || r->n_rows < 1) {
        gw_send_error(req, 502, NULL, "dbopt sent no user id");
    } else {
        json_t *doc = json_pack("{s:I,s:s,s:s}", "id", (json_int_t) gw_cell_i64(r, 0, "id"),
                                "username", username, "email", email);
        gw_send_json(req, 201, doc);
        qv_log(QV_LOG_INFO, req->request_id, "registered user %s", username);
    }
    if (r)
        quaver__v1__query_reply__free_unpacked(r, NULL);
out:
    json_decref(body);
    return req->status;
}

int gw_h_login(gw_req_t *req)
{
    json_t *body = gw_read_json(req);
    if (!body)
        return req->status;
    const char *username, *password;
    if (gw_json_string(req, body, "username", 1, 256, NULL, &username) != 0 ||
        gw_json_string(req, body, "password", 1, 1024, NULL, &password) != 0)
        goto out;
    const char *params[] = { username };
    Quaver__V1__QueryReply *r = gw_db(req, "Query", "user_by_username", 1, params, NULL);
    if (!r)
        goto out;
    pthread_once(&s_dummy_once, s_make_dummy);
    const char *stored = r->n_rows > 0 ? gw_cell(r, 0, "password_hash") : NULL;
    int ok = gw_password_verify(stored ? stored : s_dummy_hash, password) == 0 && stored;
    if (!ok) {
        gw_send_error(req, 401, NULL, "invalid username or password");
    } else {
        gw_identity_t id;
        memset(&id, 0, sizeof id);
        id.user_id = gw_cell_i64(r, 0, "id");
        snprintf(id.username, sizeof id.username, "%s", gw_cell(r, 0, "username") ?
                 gw_cell(r, 0, "username") : username);
        id.admin = gw_cell_bool(r, 0, "is_admin");
        char *tok = gw_auth_issue(req->srv->cfg->jwt_secret, req->srv->cfg->jwt_ttl_s, &id);
        if (!tok) {
            gw_send_error(req, 500, NULL, "could not issue a token");
        } else {
            json_t *doc = json_pack("{s:s,s:s,s:I,s:{s:I,s:s}}", "token", tok,
                                    "token_type", "Bearer",
                                    "expires_in", (json_int_t) req->srv->cfg->jwt_ttl_s,
                                    "user", "id", (json_int_t) id.user_id,
                                    "username", id.username);
            gw_send_json(req, 200, doc);
            free(tok);
        }
    }
    quaver__v1__query_reply__free_unpacked(r, NULL);
out:
    json_decref(body);
    return req->status;
}
