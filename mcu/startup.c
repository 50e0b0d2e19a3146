/* Vector table for the Cortex-M4 of the MPS2 AN386 harness (QEMU -M mps2-an386).
 *
 * At reset the core loads the stack pointer from word 0 and jumps to word 1: newlib's
 * rdimon crt0 (_start), which asks the host for the heap and stack through semihosting,
 * clears .bss and calls main. A fault reports itself and stops the emulator.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

extern void _start(void);
extern char __stack[];

static void fault(void)
{
    iprintf("harness: fault\n");
    exit(100);
}

__attribute__((section(".vectors"), used)) static const uintptr_t vectors[16] = {
    (uintptr_t)__stack,
    (uintptr_t)_start,
    (uintptr_t)fault, /* NMI */
    (uintptr_t)fault, /* HardFault */
    (uintptr_t)fault, /* MemManage */
    (uintptr_t)fault, /* BusFault */
    (uintptr_t)fault, /* UsageFault */
};
