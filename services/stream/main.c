/* quaver-stream: the audio store daemon. Loads the key table below, then runs stream_server. */
#include "qv_daemon.h"
#include "stream_server.h"
#include "qv_log.h"
#include <stdio.h>

static const qv_cfg_key_t s_keys[] = {
    QV_COMMON_CFG_KEYS(stream_cfg_t),
    { "storage_dir", QV_CFG_STR, offsetof(stream_cfg_t, storage_dir), "./var/audio", 0, 4096,
      NULL, QV_CFG_NONEMPTY, "where audio files live, named by their SHA-256" },
    { "max_upload_bytes", QV_CFG_INT, offsetof(stream_cfg_t, max_upload_bytes), "52428800",
      1024, 2147483647.0, NULL, 0, "largest upload accepted (larger: 413)" },
    { "read_chunk_max", QV_CFG_INT, offsetof(stream_cfg_t, read_chunk_max), "1048576", 1024,
      67108864, NULL, 0, "most bytes one Read returns" },
    { NULL, 0, 0, NULL, 0, 0, NULL, 0, NULL }
};

int main(int argc, char **argv)
{
    stream_cfg_t cfg = { 0 };
    int rc;
    if (qv_daemon_init(s_keys, &cfg, "stream", argc, argv, &rc) != 0)
        return rc;
    rc = stream_server_run(&cfg);
    qv_config_free(s_keys, &cfg);
    return rc == 0 ? 0 : 1;
}
