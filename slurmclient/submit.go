package slurmclient

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/slurmkube/slurm-vk/slurmclient/model"
)

// Submit implements Interface. A submit is never blindly repeated: when a
// request's outcome is unknown (no answer, or a gateway error), the job is
// looked up by its comment first and submitted again only if it is not
// there. Without a comment there is no safe way to tell, so the error is
// returned.
func (c *Client) Submit(ctx context.Context, spec JobSpec) (id JobID, err error) {
	defer c.observe("submit", time.Now(), &err)
	b, err := c.backendFor(ctx)
	if err != nil {
		return 0, err
	}
	id, err = b.Submit(ctx, spec)
	if err == nil || !unknownOutcome(err) || spec.Comment == "" {
		return id, err
	}
	last := err
	err = c.retry(ctx, func(b model.Backend) error {
		jobs, err := b.Jobs(ctx, JobFilter{})
		if err != nil {
			return err
		}
		// The first job with the comment, as this client's user: a copy
		// (by anyone who saw the comment) comes later, or runs as another.
		id = 0
		owner := c.cfg.User
		if owner == "" {
			owner = c.cfg.JobUser
		}
		for _, j := range jobs {
			if j.Comment == spec.Comment && (owner == "" || j.UserName == owner) && (id == 0 || j.ID < id) {
				id = j.ID
			}
		}
		if id != 0 {
			return nil
		}
		id, err = b.Submit(ctx, spec)
		if err != nil && !unknownOutcome(err) {
			return backoff.Permanent(err)
		}
		return err
	})
	if err != nil && ctx.Err() == nil && errors.Is(err, ErrUnavailable) {
		return 0, fmt.Errorf("%w (first attempt: %w)", err, last)
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
