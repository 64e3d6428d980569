/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kedr-build runtime: the tail-call table (kedr_tailcall.c). The generated
 * module defines kedr_tail_targets[] (the driver's modules, NULL-terminated)
 * and kedr_tail_sites[] (one per intercepted function the modules jump to,
 * NULL-terminated) between this header and kedr_tailcall.c.
 */
#ifndef KEDR_TAILCALL_H
#define KEDR_TAILCALL_H

struct kedr_tail_target {
	const char *name;		/* a module of the driver */
	struct module *mod;		/* while it is loaded (COMING..GOING), else NULL */
};

/* A function of the driver that jumps to an intercepted function. */
struct kedr_tail_jump {
	unsigned int target;		/* kedr_tail_targets[]: its module */
	unsigned int shndx;		/* its section in that module's ELF */
	unsigned long start, end;	/* the function, in that section */
	unsigned long site;		/* in that section: where its tail calls are reported */
	unsigned long base;		/* the section's run-time address; 0: not loaded */
};

/* The jumps to one intercepted function. */
struct kedr_tail_site {
	struct kedr_tail_jump *jumps;
	unsigned int njumps;
	int outside;			/* jumps[] a call from outside came from; -1: unknown */
	unsigned long importers;	/* bit i: kedr_tail_targets[i] imports the function */
};

#endif /* KEDR_TAILCALL_H */
