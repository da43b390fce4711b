#!/bin/sh
# Writes tiny audio seeds for fuzz_stream_probe into fuzz/corpus/fuzz_stream_probe/:
# WAV (PCM 16), FLAC, Ogg Vorbis made with libsndfile (a throw-away C program, built with cc
# and pkg-config sndfile), and an MP3 made from the WAV with lame when it is installed.
# Short, low-rate mono signals keep every seed small (the corpus is committed).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/corpus/fuzz_stream_probe"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"
cat > "$tmp/gen.c" <<'C'
#include <math.h>
#include <sndfile.h>
#include <stdio.h>
/* gen PATH FORMAT RATE FRAMES */
int main(int argc, char **argv)
{
    int fmt = 0, rate = 8000, frames = 400;
    if (argc < 3) return 2;
    sscanf(argv[2], "%i", &fmt);
    if (argc > 3) sscanf(argv[3], "%d", &rate);
    if (argc > 4) sscanf(argv[4], "%d", &frames);
    SF_INFO info = { .samplerate = rate, .channels = 1, .format = fmt };
    SNDFILE *sf = sf_open(argv[1], SFM_WRITE, &info);
    if (!sf) { fprintf(stderr, "%s: %s\n", argv[1], sf_strerror(NULL)); return 1; }
    float buf[48000];
    for (int i = 0; i < frames && i < 48000; i++)
        buf[i] = (float) (0.5 * sin(2 * M_PI * 440 * i / (double) rate));
    sf_writef_float(sf, buf, frames);
    sf_close(sf);
    return 0;
}
C
cc -O1 -o "$tmp/gen" "$tmp/gen.c" $(pkg-config --cflags --libs sndfile) -lm
# SF_FORMAT_WAV|PCM_16 = 0x010002, FLAC|PCM_16 = 0x170002, OGG|VORBIS = 0x200060,
# WAV|PCM_U8 = 0x010005, AIFF|PCM_16 = 0x020002 (not accepted: a negative seed)
"$tmp/gen" "$out/tiny.wav"  0x010002 8000 400
"$tmp/gen" "$out/u8.wav"    0x010005 8000 200
"$tmp/gen" "$out/tiny.flac" 0x170002 8000 400
"$tmp/gen" "$out/tiny.ogg"  0x200060 8000 800
"$tmp/gen" "$out/tiny.aiff" 0x020002 8000 100
if command -v lame >/dev/null 2>&1; then
    "$tmp/gen" "$tmp/mp3src.wav" 0x010002 8000 1200
    lame --quiet -b 8 "$tmp/mp3src.wav" "$out/tiny.mp3"
    # The same frames behind an ID3v2 tag.
    lame --quiet -b 8 --id3v2-only --tt seed "$tmp/mp3src.wav" "$out/id3.mp3"
else
    echo "make_audio_seeds.sh: lame not installed, no MP3 seed" >&2
fi
printf 'RIFF\044\000\000\000WAVEfmt ' > "$out/trunc.wav"
printf '\377\373\220\000' > "$out/sync_only.mp3"
ls -l "$out"
