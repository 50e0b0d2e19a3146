/* Runs a generated model on the inputs embedded by mcu/check.py and prints each output's
 * stored integers, one line per sample, through semihosting (the host's stdout).
 *
 * harness.h (written by check.py) includes the model's header and names its API:
 * HARNESS_RUN, HARNESS_INPUT_T, HARNESS_OUTPUT_T, the sizes and the sample count.
 */
#include <stdio.h>

#include "harness.h"

static HARNESS_OUTPUT_T output[HARNESS_OUTPUT_SIZE];

int main(void)
{
    int sample, i;
    for (sample = 0; sample < HARNESS_SAMPLES; ++sample) {
        const int status = HARNESS_RUN(harness_inputs[sample], output);
        iprintf("sample %d status %d:", sample, status);
        for (i = 0; i < HARNESS_OUTPUT_SIZE; ++i) {
            iprintf(" %d", (int)output[i]);
        }
        iprintf("\n");
    }
    iprintf("done %d\n", HARNESS_SAMPLES);
    return 0;
}
