# `make mcu-check`: the MNIST demo CNN as C on an emulated Cortex-M4, bit for bit against
# the integer engine. Included by the top-level Makefile (which defines VENV, PY and DEV).
#
#   1. quantize examples/mnist/mnist_cnn.onnx with its calibration images into out/mcu/
#   2. eightbit codegen -> out/mcu/src; mcu/check.py embeds MCU_SAMPLES test images
#   3. arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os, newlib + rdimon semihosting,
#      mcu/mps2_an386.ld; arm-none-eabi-size prints flash and RAM
#   4. qemu-system-arm -M mps2-an386 runs it; mcu/check.py compares every output byte
#   5. the same for a 16x8 model (MCU16_TENSORS int16): out/mcu/src16, app16.elf
#
# The Debian packages gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm are
# installed when missing and running as root.

MCU_OUT      := out/mcu
MCU_NAME     := mnist
# The 16x8 run (docs/numerics.md §E.13): the first conv block's and the residual block's
# outputs promoted to int16, so int16 Conv inputs/outputs, MaxPool, an int8 + int16 Add
# and the int16 -> int8 boundaries run on the board.
MCU16_NAME   := mnist16
MCU16_TENSORS := --int16 /features/features.0/features.0.2/Relu_output_0 \
	--int16 /features/features.4/Relu_output_0
MCU_SAMPLES  := 10
MCU_CC       := arm-none-eabi-gcc
MCU_SIZE     := arm-none-eabi-size
MCU_QEMU     := qemu-system-arm
MCU_CODEGEN  := $(VENV)/bin/eightbit codegen
MCU_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
MCU_ARCH     := -mcpu=cortex-m4 -mthumb -Os -ffunction-sections -fdata-sections
# The generated model is strict C99; the harness uses newlib's iprintf (a GNU extension).
MCU_MODEL_CFLAGS   := $(MCU_ARCH) -std=c99 -Wall -Wextra -Werror
MCU_HARNESS_CFLAGS := $(MCU_ARCH) -std=gnu99 -Wall -Wextra -Werror -I$(MCU_OUT)/src
MCU_LDFLAGS  := --specs=rdimon.specs -T mcu/mps2_an386.ld -Wl,--gc-sections
MCU_QEMU_RUN := $(MCU_QEMU) -M mps2-an386 -cpu cortex-m4 -nographic -monitor none \
	-semihosting-config enable=on,target=native -kernel

.PHONY: mcu-check mcu-tools

mcu-tools:
	@if ! command -v $(MCU_CC) >/dev/null 2>&1 || ! command -v $(MCU_QEMU) >/dev/null 2>&1 \
		|| [ -z "$$($(MCU_CC) -print-file-name=rdimon.specs | grep /)" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
				apt-get install -y -qq $(MCU_PACKAGES) >/dev/null; \
		else \
			echo "mcu-check needs the Debian packages: $(MCU_PACKAGES)"; exit 1; \
		fi; \
	fi

mcu-check: $(DEV) mcu-tools
	mkdir -p $(MCU_OUT)
	$(PY) examples/mnist/data.py $(MCU_OUT)/data
	$(VENV)/bin/eightbit quantize examples/mnist/mnist_cnn.onnx \
		--data $(MCU_OUT)/data/calib.npz -o $(MCU_OUT)/mnist_int8.onnx
	$(MCU_CODEGEN) $(MCU_OUT)/mnist_int8.onnx -o $(MCU_OUT)/src --name $(MCU_NAME)
	$(PY) mcu/check.py prepare $(MCU_OUT)/mnist_int8.onnx $(MCU_OUT)/data/test.npz \
		$(MCU_OUT)/src --name $(MCU_NAME) --samples $(MCU_SAMPLES)
	$(MCU_CC) $(MCU_MODEL_CFLAGS) -c $(MCU_OUT)/src/$(MCU_NAME).c -o $(MCU_OUT)/$(MCU_NAME).o
	$(MCU_CC) $(MCU_HARNESS_CFLAGS) mcu/main.c mcu/startup.c $(MCU_OUT)/src/inputs.c \
		$(MCU_OUT)/$(MCU_NAME).o $(MCU_LDFLAGS) -o $(MCU_OUT)/app.elf
	@echo "the model alone: flash = text + data, RAM = data + bss (the arena)"
	$(MCU_SIZE) $(MCU_OUT)/$(MCU_NAME).o
	@echo "the whole program (model, $(MCU_SAMPLES) inputs, newlib, harness)"
	$(MCU_SIZE) $(MCU_OUT)/app.elf
	timeout 300 $(MCU_QEMU_RUN) $(MCU_OUT)/app.elf > $(MCU_OUT)/qemu.log
	$(PY) mcu/check.py compare $(MCU_OUT)/src $(MCU_OUT)/qemu.log
	@echo "16x8: the same CNN with two activations int16"
	$(VENV)/bin/eightbit quantize examples/mnist/mnist_cnn.onnx $(MCU16_TENSORS) \
		--data $(MCU_OUT)/data/calib.npz -o $(MCU_OUT)/mnist_int16.onnx
	$(MCU_CODEGEN) $(MCU_OUT)/mnist_int16.onnx -o $(MCU_OUT)/src16 --name $(MCU16_NAME)
	$(PY) mcu/check.py prepare $(MCU_OUT)/mnist_int16.onnx $(MCU_OUT)/data/test.npz \
		$(MCU_OUT)/src16 --name $(MCU16_NAME) --samples $(MCU_SAMPLES)
	$(MCU_CC) $(MCU_MODEL_CFLAGS) -c $(MCU_OUT)/src16/$(MCU16_NAME).c -o $(MCU_OUT)/$(MCU16_NAME).o
	$(MCU_CC) $(subst $(MCU_OUT)/src,$(MCU_OUT)/src16,$(MCU_HARNESS_CFLAGS)) mcu/main.c \
		mcu/startup.c $(MCU_OUT)/src16/inputs.c $(MCU_OUT)/$(MCU16_NAME).o $(MCU_LDFLAGS) \
		-o $(MCU_OUT)/app16.elf
	$(MCU_SIZE) $(MCU_OUT)/$(MCU16_NAME).o
	timeout 300 $(MCU_QEMU_RUN) $(MCU_OUT)/app16.elf > $(MCU_OUT)/qemu16.log
	$(PY) mcu/check.py compare $(MCU_OUT)/src16 $(MCU_OUT)/qemu16.log
