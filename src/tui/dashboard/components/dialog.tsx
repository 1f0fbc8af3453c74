/** The confirm (y/n) and prompt dialogs; they take the bottom of the body while open. */
import { Box, Text } from 'ink';
import type { Dialog } from '../state.js';
import { useTheme } from '../theme.js';

/** Lines a dialog takes, borders included. */
export function dialogHeight(dialog: Dialog | undefined): number {
  if (dialog === undefined) return 0;
  return dialog.kind === 'confirm' ? 3 : 4;
}

export function DialogBox({ dialog, width }: { dialog: Dialog; width: number }): React.JSX.Element {
  const theme = useTheme();
  return (
    <Box
      borderStyle="round"
      borderColor={theme.tokens.accent.color}
      width={width}
      flexDirection="column"
      paddingX={1}
    >
      {dialog.kind === 'confirm' ? (
        <Text wrap="truncate-end">
          {dialog.question}{' '}
          <Text {...theme.tokens.accent} bold>
            [y/n]
          </Text>
        </Text>
      ) : (
        <>
          <Text wrap="truncate-end" {...theme.tokens.title}>
            {dialog.label}
          </Text>
          <Text wrap="truncate-start">
            <Text {...theme.tokens.accent}>{'› '}</Text>
            {dialog.value}
            <Text {...theme.tokens.accent}>▍</Text>
          </Text>
        </>
      )}
    </Box>
  );
}
