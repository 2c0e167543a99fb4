"""Submission waves for an engine with an automatic prefix cache: every prompt exactly once, each
shared prefix paid for by one representative before the prompts that reuse it."""

from plural_icm.backends.prefix_order import prefix_waves


def _tree_prompts():
    # two halves A | B, each split in two: a prompt for an item of A starts with all of B, etc.
    A, B, A1, A2, B1, B2 = ((1, 2),), ((3, 4),), ((5,),), ((6,),), ((7,),), ((8,),)
    bos = ((0,),)
    return [bos + B + A2 + ((10 + k,),) for k in range(3)] + \
           [bos + B + A1 + ((20 + k,),) for k in range(3)] + \
           [bos + A + B2 + ((30 + k,),) for k in range(3)] + [bos + A + B1 + ((40,),)]


def test_every_prompt_once_and_representatives_first():
    prompts = _tree_prompts()
    waves = prefix_waves(prompts)
    flat = [i for w in waves for i in w]
    assert sorted(flat) == list(range(len(prompts)))
    assert all(waves)
    # a prefix shared by two or more prompts is first met by exactly one prompt of its wave
    seen: set = set()
    for wave in waves[:-1]:
        firsts = [p[:d] for i in wave for p in [prompts[i]] for d in range(1, len(p))
                  if p[:d] not in seen and sum(q[:d] == p[:d] for q in prompts) > 1]
        assert len(firsts) == len(set(firsts)), "two prompts of one wave computed a new shared prefix"
        seen.update(prompts[i][:d] for i in wave for d in range(1, len(prompts[i]) + 1))
    # the last wave only reuses prefixes computed before it (shared ones)
    for i in waves[-1]:
        p = prompts[i]
        shared = [p[:d] for d in range(1, len(p)) if sum(q[:d] == p[:d] for q in prompts) > 1]
        assert all(s in seen for s in shared)


def test_short_prefixes_make_no_wave():
    prompts = _tree_prompts()
    assert prefix_waves(prompts, min_shared_tokens=100) == [sorted(range(len(prompts)), key=lambda i: prompts[i])]
    assert prefix_waves([]) == []
