package slurmclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/slurmkube/slurm-vk/slurmclient/model"
)

// Submit implements Interface. A submit is never repeated here: whether a
// lost answer made a job only the caller can find out (by the comment it
// gave the job, among the jobs of the user it trusts), and the provider
// owns that, with what it knows of the pod.
func (c *Client) Submit(ctx context.Context, spec JobSpec) (id JobID, err error) {
	defer c.observe("submit", time.Now(), &err)
	b, err := c.backendFor(ctx)
	if err != nil {
		return 0, err
	}
	id, err = b.Submit(ctx, spec)
	if err != nil && unknownOutcome(err) {
		return 0, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	return id, err
}

// unknownOutcome tells whether a failed submit may still have created a job.
func unknownOutcome(err error) bool {
	var e *model.Error
	if !errors.As(err, &e) || !errors.Is(err, ErrUnavailable) {
		return false
	}
	return len(e.Slurm) == 0 // Slurm explained itself: it did not submit
}
