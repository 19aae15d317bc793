/* prng.h: the deterministic byte stream shared by tlsproxy-backend's
 * "source" mode and tlsproxy-tlsclient's --send-bytes, so that a test can
 * compare hashes across the two without shipping data files.
 *
 * The stream is Marsaglia's xorshift64 (shifts 13, 7, 17) started from
 * state 1; every step's 64-bit output contributes its 8 bytes, least
 * significant first. The first output is the state after one step, not
 * the seed itself. Byte n of the stream is therefore independent of how
 * the stream is cut into chunks. */
#ifndef TLSPROXY_TOOLS_PRNG_H
#define TLSPROXY_TOOLS_PRNG_H

#include <stddef.h>
#include <stdint.h>

struct prng {
	uint64_t state;
	uint64_t word;  /* the current output, consumed from the low end */
	unsigned avail; /* bytes of |word| not yet handed out */
};

static inline void
prng_init(struct prng *p)
{
	p->state = 1;
	p->word = 0;
	p->avail = 0;
}

static inline uint64_t
prng_next(struct prng *p)
{
	uint64_t x = p->state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	p->state = x;
	return x;
}

/* prng_fill writes the next |n| bytes of the stream to |out|. */
static inline void
prng_fill(struct prng *p, uint8_t *out, size_t n)
{
	/* Finish a word left over from the previous call first so the
	 * stream does not depend on chunk boundaries. */
	while (n > 0 && p->avail > 0) {
		*out++ = (uint8_t)p->word;
		p->word >>= 8;
		p->avail--;
		n--;
	}
	/* Whole words: explicit shifts keep the byte order little-endian
	 * whatever the host is; compilers turn this into one store. */
	while (n >= 8) {
		uint64_t w = prng_next(p);

		for (int i = 0; i < 8; i++)
			out[i] = (uint8_t)(w >> (8 * i));
		out += 8;
		n -= 8;
	}
	if (n > 0) {
		p->word = prng_next(p);
		p->avail = 8;
		while (n > 0) {
			*out++ = (uint8_t)p->word;
			p->word >>= 8;
			p->avail--;
			n--;
		}
	}
}

#endif
