/* A monotonic clock the kernel reads without the GIL, to space its polls for signals
   (Ctrl-C) in time rather than in work: a debug build or a slow machine does the same work
   many times slower, and a poll spaced by work alone then comes too late. */
#ifndef NNFAST_CLOCK_H
#define NNFAST_CLOCK_H

#ifdef _WIN32
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

static double nnfast_monotonic_seconds(void)
{
    LARGE_INTEGER now, frequency;
    QueryPerformanceCounter(&now);
    QueryPerformanceFrequency(&frequency);
    return (double)now.QuadPart / (double)frequency.QuadPart;
}
#else
#include <time.h>

static double nnfast_monotonic_seconds(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}
#endif

#endif
