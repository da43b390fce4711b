/* qv_clock: wall and monotonic milliseconds. Deadlines on the wire are wall-clock epoch ms
 * (they cross processes); intervals inside a process use the monotonic clock. */
#ifndef QV_CLOCK_H
#define QV_CLOCK_H
#include <stdint.h>
int64_t qv_wall_ms(void);
int64_t qv_mono_ms(void);
int64_t qv_mono_us(void);
#endif
