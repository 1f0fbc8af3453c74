/**
 * The fence every command from a queen passes on a hive (`hive.shutdown`, a pushed key set): it is
 * obeyed only from the queen this hive follows, for exactly her term. An older term is STALE_TERM
 * (a deposed queen's command; a newer term is never taken from a command), anyone else NOT_QUEEN.
 */
import type { ClusterNode } from '../../p2p/index.js';
import { RbeeError } from '../../shared/errors.js';

export function assertQueenCommand(
  node: Pick<ClusterNode, 'term' | 'fence' | 'queen'>,
  peer: string,
  term: number,
  named: (peer: string) => string,
): void {
  if (term < node.term()) node.fence(term);
  const queen = node.queen();
  if (queen === null || queen.id !== peer || queen.term !== term) {
    throw new RbeeError(
      'NOT_QUEEN',
      queen === null
        ? `${named(peer)} is not a queen this hive knows (it knows none now)`
        : `${named(peer)} is not the queen of term ${term} (this hive follows ${named(queen.id)}, term ${queen.term})`,
    );
  }
}
