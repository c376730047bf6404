#include <spdk/stdinc.h>
#include <spdk/env.h>
#include <spdk/nvme.h>
#include <spdk/log.h>
#include <spdk/version.h>
#include <stdio.h>
