/**
 * Which model refs a client may name. A ref is more than a name: a URL makes the node fetch it (any
 * host the node can reach, its own LAN included), and a path makes it open a file on its machine.
 * Clients beyond this machine may use the catalog's models (by id, ref or alias), `demo` and `hf:`
 * refs; URLs and paths are for the machine's own user unless the node allows any ref
 * (`remoteModelRefs: "any"`). Names (short names, aliases, catalog ids of any hive) are for every
 * client. The check is made where a request is accepted, before a job exists, and it is also where
 * a name that stands for no model is refused (MODEL_NOT_FOUND), or a malformed ref
 * (MODEL_REF_INVALID).
 */
import { RbeeError } from '../../shared/errors.js';
import { canonicalRef, parseModelRef, type ModelRef } from '../models/index.js';
import type { ModelCatalog } from '../store/index.js';

export type RemoteModelRefs = 'catalog-hf' | 'any';

/** Whether a ref that is not in the catalog may be used by this client. */
export function refAllowedFor(ref: ModelRef, client: { local: boolean; policy: RemoteModelRefs }): boolean {
  if (client.local || client.policy === 'any') return true;
  return ref.kind === 'hf' || ref.kind === 'demo';
}

/**
 * Throws MODEL_REF_FORBIDDEN when the client may not name this model, MODEL_NOT_FOUND for a name
 * of no model, MODEL_REF_INVALID for a malformed ref.
 */
export type ModelAccessCheck = (model: string, client: { local: boolean }) => void;

export function createModelAccessCheck(init: {
  catalog: ModelCatalog;
  /** A ref, or a name of a model (models/model-names.ts), to the ref it stands for. */
  resolveModel: (input: string) => ModelRef;
  policy: RemoteModelRefs;
}): ModelAccessCheck {
  return (model, { local }) => {
    if (init.catalog.get(model) !== undefined) return;
    let ref: ModelRef;
    try {
      ref = parseModelRef(model);
    } catch {
      // a name: it stands for a model some hive holds or an alias's ref, or it is refused here
      init.resolveModel(model);
      return;
    }
    if (local || init.policy === 'any') return;
    if (refAllowedFor(ref, { local, policy: init.policy })) return;
    // a path or URL that the machine's user already added is a catalog model like any other
    if (init.catalog.get(canonicalRef(ref)) !== undefined) return;
    throw new RbeeError(
      'MODEL_REF_FORBIDDEN',
      `${ref.kind === 'url' ? 'a URL' : 'a path'} as model is for clients on the node's own machine; ` +
        'others may use its catalog models, demo and hf: refs (or the node sets remoteModelRefs: "any")',
      { details: { model } },
    );
  };
}
