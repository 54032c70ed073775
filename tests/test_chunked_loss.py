import pytest
import torch
import torch.nn.functional as F

from components.training.chunked_loss import chunked_cross_entropy


@pytest.mark.parametrize("rows", [1, 7, 250, 1000, 4096])  # one row, uneven blocks, exact split, all, more than all
def test_blocked_loss_and_gradients_equal_the_whole_matrix(rows):
    torch.manual_seed(0)
    hidden = torch.randn(1000, 16, dtype=torch.float64, requires_grad=True)
    table = torch.randn(300, 16, dtype=torch.float64, requires_grad=True)
    banned = torch.tensor([0, 5, 7])  # padding and two never-trained items: never a target, never a negative
    targets = torch.randint(8, 300, (1000,))
    want = F.cross_entropy((hidden @ table.T).index_fill(1, banned, float("-inf")), targets)
    want_hidden, want_table = torch.autograd.grad(want, (hidden, table))
    got = chunked_cross_entropy(hidden, table, targets, banned, rows)
    got_hidden, got_table = torch.autograd.grad(got, (hidden, table))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(got_hidden, want_hidden, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(got_table, want_table, rtol=1e-9, atol=1e-15)
    assert (got_table[banned] == 0).all()  # a banned item's row gets no gradient


def test_gradients_flow_only_where_asked_and_rows_are_checked():
    hidden, table = torch.randn(10, 4), torch.randn(6, 4, requires_grad=True)
    loss = chunked_cross_entropy(hidden, table, torch.arange(1, 11) % 5 + 1, torch.tensor([0]), 3)
    (grad,) = torch.autograd.grad(loss, table)
    assert grad.shape == (6, 4) and hidden.grad is None
    with pytest.raises(ValueError, match=r"rows \(0\) must be at least 1"):
        chunked_cross_entropy(hidden, table, torch.ones(10, dtype=torch.long), torch.tensor([0]), 0)
